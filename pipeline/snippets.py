"""One decoded video cut into :class:`SnippetBatch` es on the snippet grid, in a background thread.

:class:`SnippetSource` decodes a video once (frames through :mod:`clipae.pipeline.decode`,
audio through :mod:`clipae.pipeline.audio`) and assembles batches of consecutive snippets:

- ``frames[b]``: the grid frames ``[i*stride, i*stride + length)`` of snippet ``i``, the final
  frame repeated past the video's end;
- ``next_frames[b]`` / ``has_next[b]``: grid frame ``i*stride + length``, for optical flow;
- ``audio[b]``: the audio window centred on the snippet's centre.

The work runs in a thread that fills a bounded queue (``queue_size`` batches), so decoding
overlaps the networks and memory stays bounded whatever the video's length. A source created
with ``after=<the previous video's source>`` starts decoding as soon as the previous one has
decoded its last batch: the next video is prefetched while the networks finish the current
one, and at most two videos' queues exist at a time.
"""
from __future__ import annotations

import queue
import threading
from collections import deque
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from clipae.extractors.base import SnippetBatch
from clipae.pipeline.audio import AudioReader, AudioSettings
from clipae.pipeline.decode import Backend, FrameSettings, VideoDecoder, VideoTiming
from clipae.pipeline.grid import SnippetGrid


@dataclass(frozen=True)
class VideoFacts:
    """What the manifest line says about the source video, known before the first batch."""

    duration_s: float
    native_fps: float
    num_frames: int
    num_snippets: int
    has_audio: bool


class _End:
    pass


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class SnippetSource:
    """Batches of one video on ``grid``.

    frames:       whether any stream reads frames (otherwise no frame is decoded)
    audio_window: samples per audio window (0: no stream reads audio)
    num_snippets: force this many rows (an existing manifest line's count when streams are
                  added to it); the grid's own count otherwise
    after:        start only once this source has finished decoding (prefetch in order)
    """

    def __init__(self, path: str, grid: SnippetGrid, *, frames: bool, audio_window: int, batch_size: int,
                 num_snippets: int | None = None, frame_settings: FrameSettings = FrameSettings(),
                 audio_settings: AudioSettings = AudioSettings(), backends: list[Backend] | None = None,
                 queue_size: int = 2, after: "SnippetSource | None" = None) -> None:
        self.path = str(path)
        self.grid = grid
        self.want_frames = frames
        self.audio_window = audio_window
        self.batch_size = batch_size
        self.forced_snippets = num_snippets
        self.frame_settings = frame_settings
        self.audio_settings = audio_settings
        self.backends = backends
        self.backend: str | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._facts: VideoFacts | None = None
        self._after = after
        self._thread = threading.Thread(target=self._run, name=f"decode:{self.path}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ consumer side

    def facts(self) -> VideoFacts:
        """Blocks until the video is opened; raises the video's :class:`InputError` if it cannot be."""
        if self._facts is None:
            self._facts = self._get()
        return self._facts

    def __iter__(self) -> Iterator[SnippetBatch]:
        self.facts()
        while True:
            item = self._get()
            if isinstance(item, _End):
                return
            yield item

    def _get(self):
        item = self._queue.get()
        if isinstance(item, _Failure):
            raise item.error
        return item

    def close(self) -> None:
        """Stop the thread (also mid-video) and release the decoder and ffmpeg."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass
        self._thread.join()

    # ------------------------------------------------------------------ producer side

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def _run(self) -> None:
        if self._after is not None:
            self._after._thread.join()
            self._after = None
        decoder = audio = None
        try:
            decoder = VideoDecoder(self.path, self.grid.fps, self.frame_settings, self.backends)
            timing = decoder.open()
            info = decoder.info
            if self.audio_window:
                audio = AudioReader(self.path, info, self.audio_settings)
            n = self.forced_snippets or self.grid.num_snippets(timing.num_grid_frames)
            has_audio = audio.has_audio if audio is not None else info.audio_channels > 0
            facts = VideoFacts(timing.duration_s, timing.native_fps, timing.num_frames, n, has_audio)
            if not self._put(facts):
                return
            for batch in self._batches(decoder, timing, audio, n):
                if not self._put(batch):
                    return
            self.backend = decoder.backend
            self._put(_End())
        except Exception as e:  # handed to the consumer, which records it for this video
            self._put(_Failure(e))
        finally:
            if decoder is not None:
                decoder.close()
            if audio is not None:
                audio.close()

    def _batches(self, decoder: VideoDecoder, timing: VideoTiming, audio: AudioReader | None,
                 num_snippets: int) -> Iterator[SnippetBatch]:
        frames = GridFrames(decoder, timing.num_grid_frames) if self.want_frames else None
        g = self.grid
        for first in range(0, num_snippets, self.batch_size):
            if self._stop.is_set():
                return
            index = np.arange(first, min(first + self.batch_size, num_snippets), dtype=np.int64)
            batch = SnippetBatch(index=index)
            if frames is not None:
                starts = index * g.stride
                batch.frames = np.stack([frames.take(range(s, s + g.length)) for s in starts])
                batch.next_frames = np.stack([frames.take([s + g.length])[0] for s in starts])
                batch.has_next = starts + g.length < timing.num_grid_frames
                frames.release(int(starts[-1]) + g.stride if len(starts) else 0)
            if audio is not None and audio.has_audio:
                batch.audio = audio.windows(g.centre_s(index), self.audio_window)
            yield batch


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

    def release(self, before: int) -> None:
        """Frames before grid index ``before`` are not needed again."""
        before = min(before, self._total - 1)  # keep the final frame for padding
        while self._start < before and self._frames:
            self._frames.popleft()
            self._start += 1
