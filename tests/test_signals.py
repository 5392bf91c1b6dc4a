"""SIGINT / SIGTERM sent to real clipae-extract and clipae-train processes: they stop at a safe
point within seconds, print what was done, exit 130 / 143, and the same command resumes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import toy_streams  # noqa: F401
import videogen
from clipae.cli import extract_main
from clipae.models.synthetic import SyntheticSpec, generate
from clipae.pipeline import manifest as mf
from waiting import wait_for

HERE = Path(__file__).parent
ARGS = ["--stream-module", "toy_streams", "--streams", "toy_colour,toy_rms", "--batch-size", "2", "--quiet"]
STOP_WITHIN_S = 10.0


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(HERE), e.get("PYTHONPATH", "")])
    e["OMP_NUM_THREADS"] = "1"
    return e




def sigint_as_default() -> None:
    """In the child before it runs: SIGINT back to its default action. A suite started in the
    background by a shell (``nohup make test &``) inherits SIGINT ignored, and Python then leaves it
    ignored, as it should for a job the user sent to the background."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop(proc: subprocess.Popen, signum: int, timeout: float = STOP_WITHIN_S) -> tuple[str, str, float]:
    t0 = time.monotonic()
    proc.send_signal(signum)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"still running {timeout} s after {signal.Signals(signum).name}")
    return out, err, time.monotonic() - t0


def ok_lines(out: Path) -> dict:
    path = out / "manifest.jsonl"
    return mf.read_manifest(path) if path.exists() else {}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return videogen.make_videos(tmp_path_factory.mktemp("signal_videos"), [2.0] * 5, "mono")


@pytest.fixture(scope="module")
def reference(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    assert extract_main([str(videos), str(out), *ARGS]) == 0
    return out


def start_extract(videos: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "clipae", "extract", str(videos), str(out), *ARGS, *extra],
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_as_default)


@pytest.mark.parametrize("signum, workers", [(signal.SIGINT, "0"), (signal.SIGTERM, "2")])
def test_extract_stops_on_a_signal_and_resumes(videos, reference, tmp_path, signum, workers):
    out = tmp_path / "out"
    proc = start_extract(videos, out, "--toy-delay", "0.4", "--decode-workers", workers)
    wait_for(lambda: len(ok_lines(out)) >= 1, proc)
    stdout, stderr, took = stop(proc, signum)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, (stdout, stderr)
    assert "Traceback" not in stderr
    assert f"{name}: stopping at the next safe point" in stderr
    assert f"stopped by {name}:" in stdout and " ok, " in stdout      # the summary so far
    done = ok_lines(out)
    assert 1 <= len(done) < 5
    for rec in done.values():                                         # every ok line is complete
        for entry in rec["streams"].values():
            assert np.load(out / entry["path"]).shape == (rec["num_snippets"], entry["dim"])
    assert not list((out / "features").glob("*/.*.tmp"))
    rerun = subprocess.run([sys.executable, "-m", "clipae", "extract", str(videos), str(out), *ARGS],
                           env=env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(done)} already done" in rerun.stdout
    final, ref = ok_lines(out), ok_lines(reference)
    assert set(final) == set(ref)
    for vid, rec in final.items():
        for name_, entry in rec["streams"].items():
            assert np.array_equal(np.load(out / entry["path"]), np.load(reference / ref[vid]["streams"][name_]["path"]))


def test_second_ctrl_c_stops_extraction_at_once(videos, tmp_path):
    out = tmp_path / "out"
    proc = start_extract(videos, out, "--toy-delay", "30")  # a network batch that takes 30 s
    wait_for(out.is_dir, proc)
    time.sleep(3.0)                                          # inside the first batch
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    stdout, stderr, took = stop(proc, signal.SIGINT, timeout=5.0)
    assert proc.returncode == 130
    assert "second SIGINT: stopping now" in stderr and "Traceback" not in stderr
    assert took < 5.0


# --------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    spec = SyntheticSpec(train=8, test=4, classes=2, snippets=16,
                         dims={"i3d_rgb": 8, "i3d_flow": 8, "clip": 8, "vggish": 4}, seed=0)
    return generate(tmp_path_factory.mktemp("signal_synthetic"), spec)


def train_command(data, out: Path) -> list[str]:
    argv = [sys.executable, "-m", "clipae", "train", "--manifest", str(data["manifest"]),
            "--annotations", str(data["ground_truth"]), "--out", str(out), "--quiet", "--mode", "weakly"]
    for o in ["data.num_segments=16", "model.hidden_dim=16", "model.attention_dim=8", "model.caf_dim=8",
              "model.ccp_dim=8", "train.batch_size=2", "train.threads=1", "train.epochs_per_round=40"]:
        argv += ["--set", o]
    return argv


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_train_stops_on_a_signal_and_resumes(data, tmp_path, signum):
    out = tmp_path / "run"
    proc = subprocess.Popen(train_command(data, out), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=sigint_as_default)
    wait_for(lambda: (out / "metrics.csv").exists(), proc)   # one epoch is checkpointed
    stdout, stderr, took = stop(proc, signum)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    assert f"clipae-train: stopped by {name} in round 0, epoch " in stderr and "run the same command again" in stderr
    import torch
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert not state["complete"] and 1 <= state["epoch"] < 40
    rerun = subprocess.run(train_command(data, out), env=env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming at round 0, epoch {state['epoch']}" in (out / "train.log").read_text()
    assert torch.load(out / "checkpoint.pt", weights_only=True)["complete"]
    assert len((out / "metrics.csv").read_text().splitlines()) == 1 + 40


def test_sigterm_outside_the_stop_block_exits_143_not_minus_15():
    """While a command starts or winds down (no StopSignals block), SIGTERM still ends it with 143."""
    code = ("import os, signal, time\n"
            "from clipae.core.interrupt import StopSignals, exit_on_sigterm\n"
            "exit_on_sigterm()\n"
            "with StopSignals('t'):\n"
            "    pass\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "time.sleep(5)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 143 and "Traceback" not in proc.stderr
