"""Package layout, snippet grid, manifest I/O and the command-line stubs."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from clipae.core.grid import SnippetGrid
from clipae.pipeline import manifest as mf

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("frames,expected", [(1, 1), (16, 1), (17, 2), (32, 2), (33, 3), (355, 23), (420, 27)])
def test_num_snippets_formula(frames, expected):
    assert SnippetGrid().num_snippets(frames) == expected


def test_grid_times_and_overlap():
    g = SnippetGrid(fps=25, length=16, stride=4)
    assert g.num_snippets(100) == 22  # ceil((100-16)/4)+1
    assert g.start_s(2) == pytest.approx(8 / 25)
    assert g.end_s(2) == pytest.approx(24 / 25)
    assert g.centre_s(2) == pytest.approx(16 / 25)
    np.testing.assert_allclose(g.centre_s(np.arange(3)), (np.arange(3) * 4 + 8) / 25)
    with pytest.raises(ValueError):
        SnippetGrid(fps=0)


def test_manifest_last_line_wins_and_torn_line_ignored(tmp_path):
    p = tmp_path / "manifest.jsonl"
    mf.append_record(p, {"video_id": "a", "status": "failed"})
    mf.append_record(p, {"video_id": "b", "status": "ok"})
    mf.append_record(p, {"video_id": "a", "status": "ok"})
    with open(p, "a") as f:
        f.write('{"video_id": "c", "sta')  # a crash in the middle of an append
    recs = mf.read_manifest(p)
    assert list(recs) == ["b", "a"] and recs["a"]["status"] == "ok"


def test_save_array_atomic_leaves_no_temporary(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    mf.save_array_atomic(tmp_path / "f" / "x.npy", a)
    assert [p.name for p in (tmp_path / "f").iterdir()] == ["x.npy"]
    np.testing.assert_array_equal(np.load(tmp_path / "f" / "x.npy"), a)


def test_wheel_installs_only_the_clipae_package(tmp_path):
    # built from a copy: a wheel build writes build/ and *.egg-info/ into the tree it builds
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                             ".pytest_cache", "data"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(src)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("clipae-*.whl"))
    tops = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"clipae", next(t for t in tops if t.endswith(".dist-info"))}
    names = zipfile.ZipFile(wheel).namelist()
    for sub in ("pipeline", "extractors", "models", "eval"):
        assert f"clipae/{sub}/__init__.py" in names
    assert not any(n.startswith("clipae/tests/") for n in names)
