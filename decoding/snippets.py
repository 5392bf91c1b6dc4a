"""One decoded video cut into :class:`SnippetBatch` es on the snippet grid.

:func:`produce` decodes a video once (frames through :mod:`clipae.decoding.decode`, audio
through :mod:`clipae.decoding.audio`) and hands over batches of consecutive snippets:

- ``frames[b]``: the grid frames ``[i*stride, i*stride + length)`` of snippet ``i``, the final
  frame repeated past the video's end;
- ``next_frames[b]`` / ``has_next[b]``: grid frame ``i*stride + length``, for optical flow;
- ``audio[b]``: the audio window centred on the snippet's centre.

It runs beside the networks, either in a thread of this process (:class:`SnippetSource`) or in
worker processes (:mod:`clipae.decoding.workers`), and fills a bounded queue
(``queue_size`` batches), so memory stays bounded whatever the video's length. A
:class:`SnippetSource` created with ``after=<the previous video's source>`` starts decoding as
soon as the previous one has decoded its last batch: the next video is prefetched while the
networks finish the current one, and at most two videos' queues exist at a time.
"""
from __future__ import annotations

import queue
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from ..core.grid import SnippetGrid
from .audio import AudioReader, AudioSettings
from .batch import SnippetBatch
from .decode import DEFAULT_DECODERS, FrameSettings, InputError, VideoDecoder, VideoTiming, backends_named

#: ``--stall-timeout``: seconds a decoder may hand over nothing before its video fails
DEFAULT_STALL_TIMEOUT_S = 300.0
#: seconds :meth:`SnippetSource.close` waits for a decoding thread to stop
CLOSE_PATIENCE_S = 5.0
#: seconds between two looks at a queue
POLL_S = 0.1
#: a decoding thread parks its decoder before every wait for the consumer (decord drops the frames
#: it decoded ahead, 200-290 MiB at 320x240) until its waits average less than this; parking costs a
#: seek and re-decoding from a keyframe, ~40 ms at 320x240, small beside longer waits (docs/speed.md)
PARK_AFTER_WAIT_S = 0.3


@dataclass(frozen=True)
class VideoFacts:
    """What the manifest line says about the source video, known before the first batch."""

    duration_s: float
    native_fps: float
    num_frames: int
    num_snippets: int
    has_audio: bool


@dataclass(frozen=True)
class VideoJob:
    """Everything needed to decode one video into batches (picklable: it travels to worker processes).

    frames:       whether any stream reads frames (otherwise no frame is decoded)
    audio_window: samples per audio window (0: no stream reads audio)
    num_snippets: force this many rows (an existing manifest line's count when streams are
                  added to it); the grid's own count otherwise
    decoders:     names of the video decoders to try in order
    """

    path: str
    grid: SnippetGrid
    frames: bool
    audio_window: int
    batch_size: int
    num_snippets: int | None = None
    frame_settings: FrameSettings = FrameSettings()
    audio_settings: AudioSettings = AudioSettings()
    decoders: tuple[str, ...] = DEFAULT_DECODERS


class End:
    """The last item of a video: every batch was handed over; ``backend`` is the decoder that read it."""

    def __init__(self, backend: str | None) -> None:
        self.backend = backend


class Failure:
    """Decoding stopped with ``error`` (an :class:`InputError` for a bad video)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def produce(job: VideoJob, put: Callable[[object, Callable[[], None]], bool], stopped: Callable[[], bool]) -> None:
    """Decode ``job`` and hand over, in order, its :class:`VideoFacts`, every :class:`SnippetBatch`
    and an :class:`End` -- or a :class:`Failure` at the point where it went wrong.

    ``put(item, waiting)`` returns False when the consumer has gone (the video is then abandoned)
    and calls ``waiting()`` once before it blocks; ``stopped()`` is polled between batches. Waits
    for the consumer park the decoder first while they are long (:class:`_Waits`).
    """
    decoder = audio = None
    try:
        decoder = VideoDecoder(job.path, job.grid.fps, job.frame_settings, backends_named(job.decoders))
        timing = decoder.open()
        info = decoder.info
        if job.audio_window:
            audio = AudioReader(job.path, info, job.audio_settings)
        n = job.num_snippets or job.grid.num_snippets(timing.num_grid_frames)
        has_audio = audio.has_audio if audio is not None else info.audio_channels > 0
        if not put(VideoFacts(timing.duration_s, timing.native_fps, timing.num_frames, n, has_audio), _nothing):
            return
        waits = _Waits(decoder)
        for batch in _batches(job, decoder, timing, audio, n):
            if stopped() or not waits.put(put, batch):
                return
        put(End(decoder.backend), _nothing)
    except Exception as e:  # handed to the consumer, which records it for this video
        put(Failure(e), _nothing)
    finally:
        if decoder is not None:
            decoder.close()
        if audio is not None:
            audio.close()


def _nothing() -> None:
    pass


class _Waits:
    """Hands batches to ``put`` and parks ``decoder`` before every wait for the consumer, until the
    waits (of the batches that had to wait; a moving average from twice :data:`PARK_AFTER_WAIT_S`)
    average less than :data:`PARK_AFTER_WAIT_S`; from then on it never parks. Parking at some waits
    only would be worse than never: the next frame's accurate seek reads packets ahead again, and
    a wait that does not park lets decord decode them all."""

    def __init__(self, decoder: VideoDecoder) -> None:
        self.decoder = decoder
        self.average_s = 2 * PARK_AFTER_WAIT_S
        self.parking = True
        self._waited = False

    def put(self, put: Callable[[object, Callable[[], None]], bool], batch: SnippetBatch) -> bool:
        self._waited = False
        began = time.monotonic()
        handed = put(batch, self._waiting)
        if self._waited:
            self.average_s += 0.1 * (time.monotonic() - began - self.average_s)
            self.parking = self.parking and self.average_s >= PARK_AFTER_WAIT_S
        return handed

    def _waiting(self) -> None:
        self._waited = True
        if self.parking:
            self.decoder.park()


def _batches(job: VideoJob, decoder: VideoDecoder, timing: VideoTiming, audio: AudioReader | None,
             num_snippets: int) -> Iterator[SnippetBatch]:
    frames = GridFrames(decoder, timing.num_grid_frames) if job.frames else None
    g = job.grid
    for first in range(0, num_snippets, job.batch_size):
        index = np.arange(first, min(first + job.batch_size, num_snippets), dtype=np.int64)
        batch = SnippetBatch(index=index)
        if frames is not None:
            starts = index * g.stride
            batch.frames = frames.windows(starts, g.length)
            batch.next_frames = frames.windows(starts + g.length, 1)[:, 0]
            batch.has_next = starts + g.length < timing.num_grid_frames
            frames.release(int(starts[-1]) + g.stride if len(starts) else 0)
        if audio is not None and audio.has_audio:
            batch.audio = audio.windows(g.centre_s(index), job.audio_window)
        yield batch


class BatchSource:
    """One video's batches, however they are decoded: :meth:`facts` (known before the first
    batch), iteration over :class:`SnippetBatch` es in order, and :meth:`close`.

    Subclasses implement ``_get()`` (the next item, raising the video's error) and
    ``_next()`` (the next batch, ``None`` once the video has ended).
    """

    _facts: VideoFacts | None = None
    backend: str | None = None  # the decoder that read the video, once it has ended

    def facts(self) -> VideoFacts:
        """Blocks until the video is opened; raises the video's :class:`InputError` if it cannot be."""
        if self._facts is None:
            self._facts = self._get()
        return self._facts

    def __iter__(self) -> Iterator[SnippetBatch]:
        self.facts()
        while (batch := self._next()) is not None:
            yield batch

    def _get(self):
        raise NotImplementedError

    def _next(self) -> SnippetBatch | None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SnippetSource(BatchSource):
    """Batches of one video (a :class:`VideoJob`), decoded in a background thread.

    after:           start only once this source has finished decoding (prefetch in order)
    stall_timeout_s: a decoder that hands over nothing for this long while the consumer waits
                     fails the video with ``stalled: no frames for N s`` (see :func:`stalled`);
                     its thread is left behind (a daemon, told to stop) and the run goes on
    """

    def __init__(self, job: VideoJob, *, queue_size: int = 2, after: "SnippetSource | None" = None,
                 stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S) -> None:
        self.job = job
        self.path = job.path
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._started = threading.Event()   # the producer is past waiting for ``after``
        self._released = threading.Event()  # the producer returned, or was given up on
        self._started_at = 0.0
        self._stall_s = stall_timeout_s
        self._stalled = False
        self._done = False
        self._after = after
        self._thread = threading.Thread(target=self._run, name=f"decode:{self.path}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ consumer side

    def _next(self) -> SnippetBatch | None:
        if self._done:
            return None
        item = self._get()
        if isinstance(item, End):
            self.backend, self._done = item.backend, True
            return None
        return item

    def _get(self):
        waiting_since = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=POLL_S)
                break
            except queue.Empty:
                if not self._started.is_set():
                    continue  # the previous video is still decoding: not this one's stall
                since = max(waiting_since, self._started_at)
                if time.monotonic() - since >= self._stall_s:
                    self._done = self._stalled = True
                    self._give_up()
                    raise stalled(self._stall_s) from None
        if isinstance(item, Failure):
            self._done = True
            raise item.error
        return item

    def close(self) -> None:
        """Stop the thread (also mid-video) and release the decoder and ffmpeg; a thread stuck in
        its decoder for ``CLOSE_PATIENCE_S`` is left behind."""
        self._stop.set()
        deadline = time.monotonic() + (0.0 if self._stalled else CLOSE_PATIENCE_S)
        while self._thread.is_alive() and time.monotonic() < deadline:
            try:
                self._queue.get(timeout=POLL_S)
            except queue.Empty:
                pass
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._give_up()

    def _give_up(self) -> None:
        self._stop.set()
        self._released.set()  # the next video need not wait for this thread

    # ------------------------------------------------------------------ producer side

    def _put(self, item, waiting: Callable[[], None]) -> bool:
        if self._stop.is_set():
            return False
        try:
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            waiting()
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                pass
        return False

    def _run(self) -> None:
        try:
            if self._after is not None:
                while not self._after._released.wait(POLL_S):
                    if self._stop.is_set():
                        return
                self._after = None
            self._started_at = time.monotonic()
            self._started.set()
            produce(self.job, self._put, self._stop.is_set)
        finally:
            self._released.set()


def stalled(seconds: float) -> InputError:
    """The error of a video whose decoder produced nothing for ``seconds``."""
    return InputError(f"stalled: no frames for {seconds:g} s")


def storage_bytes(storage: torch.UntypedStorage) -> np.ndarray:
    """The whole storage as a uint8 array; ``.base`` is a tensor that every view of it keeps alive
    (a ``weakref.finalize`` on it runs once no view is left)."""
    return torch.empty(0, dtype=torch.uint8).set_(storage, 0, (storage.nbytes(),)).numpy()


class Recycler:
    """``empty(shape, dtype)`` arrays whose memory is reused once every view of it is gone.

    A batch of 16 THUMOS snippets is ~90 MB; fresh memory for each costs page faults that took
    about as long as decoding itself (``python -m cProfile`` on :func:`produce`). Buffers come
    back through ``weakref.finalize`` on the tensor each array hangs from, so a batch the
    consumer still holds is never reused; at most ``keep`` idle buffers are kept.

    No lock is taken anywhere: a finalizer runs inside whatever allocation starts a GC pass, in
    any thread, also in the middle of :meth:`empty`, so a lock held there could be waited for by
    the finalizer in the same thread (a deadlock). The free list is a ``deque`` whose ``append``
    and ``popleft`` are atomic, and nothing iterates it.
    """

    def __init__(self, keep: int = 1) -> None:
        self._free: deque[torch.UntypedStorage] = deque()
        self._keep = keep

    def empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        storage = self._take(nbytes)
        if storage is None:
            storage = torch.UntypedStorage(nbytes)
        raw = storage_bytes(storage)
        weakref.finalize(raw.base, self._give_back, storage)
        return raw[:nbytes].view(dtype).reshape(shape)

    def _take(self, nbytes: int) -> torch.UntypedStorage | None:
        """An idle buffer of at least ``nbytes`` off the free list, or ``None``; smaller ones stay there."""
        for _ in range(len(self._free)):
            try:
                storage = self._free.popleft()
            except IndexError:  # emptied meanwhile by another thread
                return None
            if storage.nbytes() >= nbytes:
                return storage
            self._free.append(storage)
        return None

    def _give_back(self, storage: torch.UntypedStorage) -> None:
        """Called by ``weakref.finalize`` (any thread, any moment): lock-free, see the class docstring."""
        self._free.append(storage)
        while len(self._free) > self._keep:
            try:
                self._free.popleft()
            except IndexError:
                break


#: where the frames of snippet batches are cut (one per process)
FRAME_BUFFERS = Recycler()


class GridFrames:
    """Random access to a window of grid frames streamed from a decoder, padded past the end."""

    def __init__(self, decoder: VideoDecoder, total: int) -> None:
        self._chunks = decoder.chunks()
        self._total = total
        self._frames: deque[np.ndarray] = deque()
        self._start = 0   # grid index of self._frames[0]

    def take(self, indices) -> list[np.ndarray]:
        out = []
        for k in indices:
            k = min(k, self._total - 1)
            while k >= self._start + len(self._frames):
                chunk = next(self._chunks, None)
                if chunk is None:
                    raise RuntimeError(f"the decoder yielded {self._start + len(self._frames)} of {self._total} grid frames")
                self._frames.extend(chunk)
            out.append(self._frames[k - self._start])
        return out

    def windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """``(len(starts), length, H, W, 3)``: grid frames ``[s, s + length)`` for each ``s``,
        copied once into a new array (the final frame repeats past the end)."""
        out = None
        for b, start in enumerate(starts):
            for i, frame in enumerate(self.take(range(start, start + length))):
                if out is None:
                    out = FRAME_BUFFERS.empty((len(starts), length, *frame.shape), frame.dtype)
                out[b, i] = frame
        return out

    def release(self, before: int) -> None:
        """Frames before grid index ``before`` are not needed again."""
        before = min(before, self._total - 1)  # keep the final frame for padding
        while self._start < before and self._frames:
            self._frames.popleft()
            self._start += 1
