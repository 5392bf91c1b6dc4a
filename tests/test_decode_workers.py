"""Decoding in worker processes (decoding/workers.py)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import toy_streams  # noqa: F401  (registers toy_colour and toy_rms)
import videogen
from clipae.cli import extract_main as main
from clipae.pipeline import manifest as mf
from clipae.decoding.decode import DecordVideo, InputError
from clipae.decoding import workers as decode_workers
from clipae.decoding.workers import DecodePool, auto_decode_workers
from clipae.core.dist import Ranks
from clipae.pipeline.extract_cli import build_parser, config_from_args
from clipae.core.grid import SnippetGrid
from clipae.decoding import snippets
from clipae.decoding.snippets import SnippetSource, VideoJob

TOYS = ["--stream-module", "toy_streams", "--streams", "toy_colour,toy_rms", "--quiet"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    videogen.make_video(d / "long.mp4", duration=6.0, size=(96, 64))
    videogen.make_video(d / "short.mp4", duration=0.6, audio=None)
    videogen.make_video(d / "wide.mp4", duration=2.0, size=(128, 48), audio="stereo")
    videogen.make_truncated(d / "truncated.mp4")
    (d / "text.mp4").write_text("not a video\n")
    return d


def job(path, batch_size=2):
    return VideoJob(str(path), SnippetGrid(), frames=True, audio_window=15360, batch_size=batch_size)


def batches(source):
    try:
        return [(b.index.copy(), b.frames.copy(), None if b.audio is None else b.audio.copy()) for b in source]
    finally:
        source.close()


def assert_same(got, want):
    assert len(got) == len(want)
    for (i, f, a), (j, g, b) in zip(got, want):
        np.testing.assert_array_equal(i, j)
        np.testing.assert_array_equal(f, g)
        assert (a is None) == (b is None) and (a is None or np.array_equal(a, b))


def test_clipae_extract_with_worker_processes_writes_what_a_thread_writes(folder, tmp_path, capsys):
    assert main([str(folder), str(tmp_path / "thread"), *TOYS]) == 1
    assert main([str(folder), str(tmp_path / "procs"), *TOYS, "--decode-workers", "2"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("3 ok, 2 failed") and out[-1].split(";")[0] == out[len(out) // 2 - 1].split(";")[0]
    thread = mf.read_manifest(tmp_path / "thread" / "manifest.jsonl")
    procs = mf.read_manifest(tmp_path / "procs" / "manifest.jsonl")
    assert {k: v["status"] for k, v in thread.items()} == {k: v["status"] for k, v in procs.items()}
    assert procs["truncated"]["error"] == thread["truncated"]["error"] and "truncated" in procs["truncated"]["error"]
    for vid, rec in thread.items():
        if rec["status"] == "ok":
            assert {k: v for k, v in procs[vid].items() if k != "streams"} == {k: v for k, v in rec.items() if k != "streams"}
            for name in rec["streams"]:
                np.testing.assert_array_equal(np.load(tmp_path / "procs" / procs[vid]["streams"][name]["path"]),
                                              np.load(tmp_path / "thread" / rec["streams"][name]["path"]))


@pytest.mark.parametrize("value", ["-1", "two"])
def test_bad_worker_count_is_one_line(folder, tmp_path, capsys, value):
    assert main([str(folder), str(tmp_path), *TOYS, "--decode-workers", value]) == 2
    assert capsys.readouterr().err.strip() == (f"clipae-extract: error: --decode-workers {value}: expected a number "
                                               "of processes (0 or more) or auto")


def test_auto_worker_count(folder, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert auto_decode_workers(torch.device("cpu")) == 0        # the networks need the cores
    assert auto_decode_workers(torch.device("cuda")) == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")                  # torchrun --nproc_per_node=4
    assert auto_decode_workers(torch.device("cuda:3")) == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert auto_decode_workers(torch.device("cuda")) == 1
    config = config_from_args(build_parser()[0].parse_args([str(folder), "out"]), build_parser()[1], Ranks())
    assert config.decode_workers is None   # auto, resolved by the runner for the streams' device


@pytest.mark.parametrize("park_after_s", [0.01, 1.0])
def test_a_decoding_thread_parks_before_long_waits_only(folder, monkeypatch, park_after_s):
    """The thread parks its decoder (decord drops the frames it decoded ahead) before every wait on
    a full queue while its waits average PARK_AFTER_WAIT_S or more, from twice that at the start:
    with 0.05-s waits it parks at all of them against 0.01 s, and only at the first few (~8) against
    1 s. The batches are the ones a consumer that never lets it wait gets."""
    video = folder / "twenty.mp4"
    if not video.exists():
        videogen.make_video(video, duration=20.0, size=(64, 48))
    want = batches(SnippetSource(job(video, batch_size=1), queue_size=64))
    parks = []
    park = DecordVideo.park
    monkeypatch.setattr(DecordVideo, "park", lambda self: (parks.append(self._next), park(self)))
    monkeypatch.setattr(snippets, "PARK_AFTER_WAIT_S", park_after_s)
    source = SnippetSource(job(video, batch_size=1), queue_size=1)
    got = []
    for b in source:
        time.sleep(0.05)  # a slow network: the thread fills the queue and waits
        got.append((b.index.copy(), b.frames.copy(), b.audio.copy()))
    source.close()
    assert_same(got, want)
    assert len(got) == 32 and min(parks) > 0  # 20 s: 500 grid frames, 32 snippets
    assert len(parks) >= 25 if park_after_s < 0.05 else 3 <= len(parks) <= 10


def test_a_decoding_process_that_waited_parks_its_decoder(folder, monkeypatch, tmp_path):
    """The same in a decoding process (forked with the patches below): it parks before waiting for
    a free slot or a place in the queue, and the batches are unchanged."""
    want = batches(SnippetSource(job(folder / "long.mp4", batch_size=1), queue_size=64))
    log = tmp_path / "parks.txt"
    park = DecordVideo.park

    def logged(self):
        with open(log, "a") as f:
            f.write(f"{self._next}\n")
        park(self)
    monkeypatch.setattr(DecordVideo, "park", logged)
    monkeypatch.setattr(snippets, "PARK_AFTER_WAIT_S", 0.01)
    if decode_workers.START_METHOD != "fork":
        pytest.skip("the patches reach the decoding process only when it is forked")
    with DecodePool(1, queue_size=1) as pool:
        source = pool.open(job(folder / "long.mp4", batch_size=1))
        got = []
        for b in source:
            time.sleep(0.05)
            got.append((b.index.copy(), b.frames.copy(), b.audio.copy()))
        source.close()
    assert_same(got, want)
    assert len(log.read_text().split()) >= 3


def test_a_video_abandoned_midway_leaves_the_worker_clean(folder):
    want = batches(SnippetSource(job(folder / "wide.mp4")))
    with DecodePool(1, queue_size=1) as pool:
        first = pool.open(job(folder / "long.mp4", batch_size=1))
        next(iter(first))             # one batch read, more decoded and waiting
        first.close()
        assert_same(batches(pool.open(job(folder / "wide.mp4"))), want)
        with pytest.raises(RuntimeError, match="busy"):
            pool.open(job(folder / "wide.mp4")), pool.open(job(folder / "wide.mp4"))


def test_a_worker_that_dies_fails_its_video_and_is_replaced(folder):
    want = batches(SnippetSource(job(folder / "short.mp4")))
    with DecodePool(1, queue_size=1) as pool:
        source = pool.open(job(folder / "long.mp4", batch_size=1))
        source.facts()
        os.kill(source.pid, signal.SIGKILL)   # like a decoder crashing on a broken file
        with pytest.raises(InputError, match=r"^the decoding process died \(killed by signal SIGKILL\)$"):
            for _ in source:
                pass
        source.close()
        assert_same(batches(pool.open(job(folder / "short.mp4"))), want)


def test_workers_exit_when_the_main_process_is_killed(tmp_path):
    script = ("import sys, time; sys.path.insert(0, %r)\n"
              "from clipae.decoding.workers import DecodePool\n"
              "pool = DecodePool(2)\n"
              "print(' '.join(str(w.process.pid) for w in pool._idle), flush=True)\n"
              "time.sleep(60)\n") % str(Path(__file__).parent)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=os.environ)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30  # workers may still be importing torch
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_batches_kept_by_the_caller_are_never_overwritten(folder, monkeypatch):
    """More batches held than the worker has slots: it adds slots instead of reusing held ones."""
    monkeypatch.setattr(decode_workers, "SLOT_PATIENCE_S", 0.2)  # forked workers see it
    want = batches(SnippetSource(job(folder / "long.mp4", batch_size=1)))
    with DecodePool(1, queue_size=1) as pool:
        kept = list(pool.open(job(folder / "long.mp4", batch_size=1)))   # 10 batches, 4 slots to start with
        assert len(kept) == len(want) == 10
        assert_same([(b.index, b.frames, b.audio) for b in kept], want)
        del kept
        assert_same(batches(pool.open(job(folder / "long.mp4", batch_size=1))), want)   # slots freed, reused
