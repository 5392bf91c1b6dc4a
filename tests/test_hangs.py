"""Nothing waits forever: the frame-buffer recycler under a GC pass, stalled decoders."""
from __future__ import annotations

import gc
import os
import signal
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch

import toy_streams  # noqa: F401  (registers toy_colour)
import videogen
from clipae.pipeline import extract
from clipae.pipeline import manifest as mf
from clipae.decoding.decode import BACKENDS, InputError
from clipae.decoding.workers import DecodePool
from clipae.pipeline.extract import RunConfig
from clipae.core.grid import SnippetGrid
from clipae.decoding.snippets import Recycler, SnippetSource, VideoJob

pytestmark = pytest.mark.timeout(120)  # a regression here hangs: fail it in minutes, with its stacks


class _CollectingDeque(deque):
    """A free list that starts a full GC pass before every access, as an allocation may."""

    def _collect(self):
        gc.collect()

    def __iter__(self):
        self._collect()
        return super().__iter__()

    def popleft(self):
        self._collect()
        return super().popleft()

    def remove(self, value):
        self._collect()
        return super().remove(value)


class _Cycle:
    pass


def test_recycler_survives_a_gc_pass_inside_empty():
    pool = Recycler(keep=1)
    pool._free = _CollectingDeque()
    pool._give_back(torch.UntypedStorage(64))  # one idle buffer
    held = _Cycle()
    held.me, held.array = held, pool.empty((4, 4), np.uint8)  # freed only by the cyclic GC
    done = threading.Event()
    result = {}

    def take():
        result["array"] = pool.empty((4, 4), np.uint8)  # the GC pass hands `held`'s buffer back meanwhile
        done.set()

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        del held
        thread = threading.Thread(target=take, daemon=True)
        thread.start()
        assert done.wait(timeout=10), "Recycler.empty deadlocked in a GC pass that handed a buffer back"
    finally:
        if was_enabled:
            gc.enable()
    assert result["array"].shape == (4, 4)
    assert len(pool._free) <= 1


# --------------------------------------------------------------------------- stalled decoders

class _BlockingVideo:
    """Hands over nothing (as a decoder stuck on a network file or a broken stream)."""

    def __init__(self, release: threading.Event) -> None:
        self._release = release

    def frames(self, indices):
        self._release.wait(timeout=120)
        return iter(())

    def close(self) -> None:
        pass


class _BlockingBackend:
    """PyAV, except that files named ``stuck*`` block in their first frame."""

    name = "blocking"

    def __init__(self) -> None:
        self.release = threading.Event()

    def open(self, path, info, times):
        if Path(path).name.startswith("stuck"):
            return _BlockingVideo(self.release)
        return BACKENDS["pyav"].open(path, info, times)


@pytest.fixture(scope="module")
def three_videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("stall_videos")
    for name in ("a", "stuck", "z"):
        videogen.make_video(d / f"{name}.mp4", duration=1.0, audio=None)
    return d


@pytest.mark.parametrize("workers", [0, 2])
def test_a_stalled_decoder_fails_its_video_and_the_run_goes_on(three_videos, tmp_path, monkeypatch, workers):
    backend = _BlockingBackend()
    monkeypatch.setitem(BACKENDS, "blocking", backend)
    config = RunConfig(videos=sorted(three_videos.glob("*.mp4")), out=tmp_path, streams=["toy_colour"],
                       progress=False, decoders=("blocking",), decode_workers=workers, stall_timeout_s=1.5)
    t0 = time.monotonic()
    try:
        summary = extract.run(config)
    finally:
        backend.release.set()
    assert time.monotonic() - t0 < 60
    assert (summary.ok, summary.failed) == (2, 1)
    assert summary.failures == [("stuck", "stalled: no frames for 1.5 s")]
    records = mf.last_records(tmp_path / mf.MANIFEST_NAME)[0]
    assert records["stuck"]["status"] == "failed" and records["z"]["status"] == "ok"


def test_a_stopped_decoding_process_is_a_stall_and_is_replaced(three_videos):
    job = VideoJob(str(three_videos / "a.mp4"), SnippetGrid(fps=25, length=2, stride=2), frames=True, audio_window=0,
                   batch_size=1, decoders=("pyav",))
    with DecodePool(1, queue_size=1, stall_timeout_s=1.0) as pool:
        source = pool.open(job)
        source.facts()
        os.kill(source.pid, signal.SIGSTOP)  # a real process that hands over nothing any more
        t0 = time.monotonic()
        with pytest.raises(InputError, match=r"stalled: no frames for 1 s"):
            for _ in source:
                pass
        assert time.monotonic() - t0 < 30
        again = pool.open(job)                # a fresh process took its place
        assert sum(len(b) for b in again) == again.facts().num_snippets


# --------------------------------------------------------------------------- the suite's own time limit

def test_a_hanging_test_fails_with_every_threads_stack(tmp_path):
    """setup.cfg gives every test a time limit (pytest-timeout) that dumps all threads' stacks."""
    import subprocess
    import sys

    (tmp_path / "test_stuck.py").write_text(
        "import threading\n"
        "def waits_in_a_helper_thread(event):\n"
        "    event.wait()\n"
        "def test_stuck():\n"
        "    event = threading.Event()\n"
        "    threading.Thread(target=waits_in_a_helper_thread, args=(event,), daemon=True).start()\n"
        "    event.wait()\n")
    setup_cfg = Path(__file__).resolve().parent.parent / "setup.cfg"
    cfg = setup_cfg.read_text(encoding="utf-8")
    assert "\ntimeout = " in cfg and "\ntimeout_method = thread" in cfg
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(setup_cfg),
                           "--rootdir", str(tmp_path), "-o", "timeout=3", str(tmp_path / "test_stuck.py")],
                          capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Timeout" in output and "waits_in_a_helper_thread" in output and "test_stuck" in output


def _ffmpeg_children() -> list[int]:
    """Process ids of the ffmpeg processes this process started (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" (", 1)
            comm, fields = rest.rsplit(") ", 1)
        except (OSError, ValueError):
            continue
        if "ffmpeg" in comm and int(fields.split()[1]) == os.getpid():
            found.append(int(pid))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_a_stalled_ffmpeg_audio_pipe_fails_the_video(tmp_path):
    video = videogen.make_video(tmp_path / "long.mp4", duration=30.0, size=(32, 24), audio="mono")
    job = VideoJob(str(video), SnippetGrid(), frames=False, audio_window=15360, batch_size=1)
    source = SnippetSource(job, stall_timeout_s=1.5)
    stopped = []
    try:
        source.facts()
        stopped = _ffmpeg_children()
        assert stopped, "no ffmpeg process reads the audio"
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)      # a real ffmpeg whose pipe stops delivering
        t0 = time.monotonic()
        with pytest.raises(InputError, match=r"stalled: no frames for 1.5 s"):
            for _ in source:
                pass
        assert time.monotonic() - t0 < 30
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        source.close()
