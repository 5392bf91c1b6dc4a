"""The soak command, reduced: 16 tiny videos (a quarter broken), two decoding modes, two random
signals each, then every check of the full soak (see ``clipae-bench soak``)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from clipae.pipeline import manifest as mf
from clipae.bench import soak

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def soaked(tmp_path_factory):
    out = tmp_path_factory.mktemp("soak")
    figures = soak.soak(out, videos=16, interruptions=2, modes="0:shared,2:per-video", broken_fraction=0.25,
                        seed=1, stop_timeout=30.0, run_timeout=300.0)
    return out, figures


def test_reduced_soak_has_no_hang_and_no_mismatch(soaked):
    _, figures = soaked
    assert figures.problems == []
    assert (figures.hangs, figures.bad_exits, figures.inconsistent, figures.mismatches) == (0, 0, 0, 0)
    assert figures.passed and (figures.good, figures.broken) == (12, 4)
    assert sum(figures.signals.values()) + figures.ended_before_signal == 4
    assert figures.runs == 1 + 2 * (2 + 1)     # the reference, then per mode two interrupted runs and the rerun


def test_the_checks_see_a_damaged_or_changed_feature_file(soaked, tmp_path):
    out, _ = soaked
    run_dir = out / "runs" / "0-shared"
    records = mf.read_manifest(run_dir / mf.MANIFEST_NAME)
    vid, rec = next((v, r) for v, r in records.items() if r["status"] == "ok")
    path = run_dir / rec["streams"]["soak_colour"]["path"]
    original = np.load(path)
    good = {v for v, r in records.items() if r["status"] == "ok"}
    broken = [v for v, r in records.items() if r["status"] == "failed"]
    try:
        np.save(path, original + 1)
        figures = soak.Figures()
        soak.compare(run_dir, out / "reference", sorted(good), broken, figures, "test")
        assert figures.mismatches == 1
        np.save(path, original[:-1])
        figures = soak.Figures()
        soak.check_output(run_dir, good, figures, "test")
        assert figures.inconsistent == 1
    finally:
        np.save(path, original)


def test_soak_command_line_rejects_bad_modes(tmp_path, capsys):
    assert soak.main([str(tmp_path), "--videos", "2", "--interruptions", "0", "--modes", "x:y"]) == 2
    assert capsys.readouterr().err.strip().startswith("clipae-bench soak: error: --modes")
    assert json.dumps(soak.Figures().lines())
