"""clipae-extract as a process: kill -9 at several moments and resume; torchrun with two ranks."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import toy_streams  # noqa: F401
import videogen
from clipae.cli import extract_main as main
from clipae.pipeline import manifest as mf
from waiting import wait_for

HERE = Path(__file__).parent
ARGS = ["--stream-module", "toy_streams", "--streams", "toy_colour,toy_rms", "--batch-size", "2", "--quiet"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return videogen.make_videos(tmp_path_factory.mktemp("crash_videos"), [2.0, 1.5, 2.5, 1.0, 2.0], "stereo")


@pytest.fixture(scope="module")
def reference(videos, tmp_path_factory):
    """An uninterrupted run (in this process)."""
    out = tmp_path_factory.mktemp("reference")
    assert main([str(videos), str(out), *ARGS]) == 0
    return out


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(HERE), e.get("PYTHONPATH", "")])
    e["OMP_NUM_THREADS"] = "1"
    return e


def start(videos: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "clipae", "extract", str(videos), str(out), *ARGS, *extra],
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)




def kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def assert_consistent(out: Path) -> int:
    """Every ok line points at complete files of the right shape; returns the number of ok videos."""
    if not (out / "manifest.jsonl").exists():
        return 0
    records = mf.read_manifest(out / "manifest.jsonl")
    for rec in records.values():
        assert rec["status"] == "ok"
        for name, entry in rec["streams"].items():
            array = np.load(out / entry["path"], allow_pickle=False)
            assert array.shape == (rec["num_snippets"], entry["dim"])
    return len(records)


def _without_options(records: dict) -> dict:
    return {vid: {**rec, "streams": {n: {k: v for k, v in e.items() if k != "options"} for n, e in rec["streams"].items()}}
            for vid, rec in records.items()}


def assert_same_as(out: Path, reference: Path) -> None:
    ours, ref = mf.read_manifest(out / "manifest.jsonl"), mf.read_manifest(reference / "manifest.jsonl")
    # same lines: config_hash, grid, facts, relative paths, settings. Each stream's ``options`` record
    # how the run was invoked (the killed run used --toy-delay, which changes no number), so they are
    # compared apart from the rest.
    assert _without_options(ours) == _without_options(ref)
    for vid, rec in ref.items():
        for entry in rec["streams"].values():
            assert np.array_equal(np.load(out / entry["path"]), np.load(reference / entry["path"]))
    assert not list((out / "features").glob("*/.*.tmp"))


def test_kill_9_and_resume(videos, reference, tmp_path, capsys):
    out = tmp_path / "out"
    # 1. killed right after the first manifest line is written
    proc = start(videos, out, "--toy-delay", "0.2")
    wait_for(lambda: (out / "manifest.jsonl").exists() and (out / "manifest.jsonl").stat().st_size > 0, proc)
    kill9(proc)
    done = assert_consistent(out)
    assert 1 <= done < 5
    # 2. resumed, then killed at a random moment while writing features
    proc = start(videos, out, "--toy-delay", "0.2")
    wait_for(lambda: len(list((out / "features").rglob("*.npy"))) > 2 * done, proc)
    time.sleep(random.Random(7).uniform(0.0, 0.5))
    kill9(proc)
    assert assert_consistent(out) >= done
    # 3. resumed to the end (in this process): the same features and lines as the uninterrupted run
    assert main([str(videos), str(out), *ARGS]) == 0
    assert "already done" in capsys.readouterr().out
    assert_same_as(out, reference)
    # 4. one more run has nothing to do and writes nothing
    size = (out / "manifest.jsonl").stat().st_size
    assert main([str(videos), str(out), *ARGS]) == 0
    assert "0 ok, 0 failed, 5 already done" in capsys.readouterr().out
    assert (out / "manifest.jsonl").stat().st_size == size


def test_torchrun_two_ranks_share_the_videos(videos, reference, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "clipae", "extract", str(videos), str(out), *ARGS]
    proc = subprocess.run(cmd, env=env(), capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert not list(out.glob("manifest.rank*.jsonl"))      # shards merged and removed
    lines = list(mf.iter_lines(out / "manifest.jsonl"))
    # one line per video: the shares are disjoint; rank 0's share (videos 0, 2, 4) is merged first
    assert [r["video_id"] for r in lines] == ["video0", "video2", "video4", "video1", "video3"]
    assert_same_as(out, reference)
    assert proc.stdout.decode().count("5 ok, 0 failed") == 1   # one summary, for all ranks
