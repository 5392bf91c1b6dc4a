"""Video decoding: the frames of one video, resampled to the snippet grid's fps, short side 256.

One call of :meth:`VideoDecoder.chunks` walks a video once and yields its frames on the grid in
bounded chunks, so memory does not grow with the video's length:

1. :func:`probe` reads the container with PyAV: streams, rotation, start times, declared length.
2. :func:`frame_times` lists the presentation time of every source frame (demuxing only), and
   the first of a list of backends (:data:`BACKENDS`) that can open the file decodes it:
   decord by default, PyAV when decord cannot open it, or from the frame where decord fails.
   Both give identical frames (tested). decord decodes ahead of what is asked for; a caller about
   to wait long between chunks calls :meth:`VideoDecoder.park` to drop those frames.
3. :func:`source_indices` resamples by those timestamps: target frame ``k`` (time
   ``[k/fps, (k+1)/fps)``) shows the last source frame presented before the middle of its
   interval, ``(k + 0.5) / fps`` -- the rule of ffmpeg's ``fps`` filter, so variable-frame-rate
   video lands on the same grid as constant-rate video.
4. Only the source frames some target shows are converted to RGB, turned upright (rotation
   metadata), and resized so the short side is 256 (bilinear with antialiasing, the
   ``torchvision.transforms.v2.Resize(256)`` rule). Frames stay uint8 ``(H, W, 3)`` and are *not*
   cropped: flow needs the full frame, so each extractor crops with
   :func:`clipae.extractors.base.centre_crop`.

Duration and frame counts come from the timestamps: a video of ``n`` source frames whose
first and last frames are ``span`` seconds apart lasts ``span * n / (n - 1)`` seconds (the last
frame is shown for an average frame's time) and has ``grid.num_frames(duration)`` target frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Iterator, Protocol

import av
import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import BadInput, WorkFailed
from ..core.grid import frames_in
from ..core.registry import Registry

#: a video whose frames cover less than its declared length by this much is called truncated
TRUNCATION_TOLERANCE_S = 1.0
TRUNCATION_TOLERANCE_FRACTION = 0.05
#: native-size frames resized in one call (bounds memory at high resolutions)
RESIZE_BYTES = 32 << 20
#: longest side a resized frame may have (4:1 at the default short side of 256); a video whose
#: frames would be longer fails before decoding, so no single video can exhaust memory
#: (docs/robustness.md gives the memory this allows)
MAX_LONG_SIDE = 1024
#: largest source frame decoded, in pixels (8192 x 8192, ~200 MB as RGB)
MAX_SOURCE_PIXELS = 8192 * 8192


class InputError(BadInput):
    """A video that cannot be extracted; the message is one line for the manifest."""


class DecodeError(InputError):
    """The video stream cannot be opened or decoded."""


class BackendError(WorkFailed):
    """One backend cannot handle this file; the next backend of the list is tried."""


@dataclass(frozen=True)
class FrameSettings:
    """Everything about decoding that changes the frames a stream sees (part of ``config_hash``)."""

    short_side: int = 256
    resize: str = "bilinear+antialias"
    resample: str = "pts: last frame before (k+0.5)/fps"


@dataclass(frozen=True)
class MediaInfo:
    """What the container says about a file, before any frame is decoded."""

    path: str
    width: int                  # displayed (after rotation), before resizing
    height: int
    rotation: int               # degrees counter-clockwise to turn decoded frames upright
    declared_duration_s: float | None  # the video stream's own length, if the container has one
    video_start_s: float        # presentation time of the first video frame in the file's timeline
    container_start_s: float    # where ffmpeg's output timeline starts (audio sample 0 sits there)
    audio_channels: int         # channels of the first audio track, 0 when there is none
    average_fps: float | None


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def probe(path: str) -> MediaInfo:
    """Container facts through PyAV; a file nothing can open is a :class:`DecodeError`."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                kind = "an audio-only file" if container.streams.audio else "no streams"
                raise DecodeError(f"no video stream ({kind})")
            stream = container.streams.video[0]
            first = next(container.decode(stream), None)
            if first is None:
                raise DecodeError("the video stream holds no decodable frame")
            rotation = int(round(first.rotation or 0)) % 360
            width, height = first.width, first.height
            if rotation in (90, 270):
                width, height = height, width
            audio = container.streams.audio
            return MediaInfo(
                path=str(path), width=width, height=height, rotation=rotation,
                declared_duration_s=_seconds(stream.duration, stream.time_base),
                video_start_s=float(first.time) if first.time is not None else 0.0,
                container_start_s=(container.start_time or 0) / av.time_base,
                audio_channels=audio[0].codec_context.layout.nb_channels if audio else 0,
                average_fps=float(stream.average_rate) if stream.average_rate else None,
            )
    except (av.FFmpegError, OSError) as e:
        raise DecodeError(f"cannot open: {one_line(e)}") from None


def one_line(e: BaseException) -> str:
    """An error's message on one line (PyAV's without its errno and file name)."""
    text = getattr(e, "strerror", None) or str(e)
    lines = text.strip().splitlines()
    return lines[0] if lines else type(e).__name__


# --------------------------------------------------------------------------- timestamps

def frame_times(path: str, info: MediaInfo) -> np.ndarray:
    """``(n,)`` float64 presentation time of every source frame, seconds from the first, sorted.

    One demuxing pass through PyAV, no decoding: exact integer timestamps, the same whichever
    backend decodes the frames later. Frames without timestamps (some AVI files) are taken as
    evenly spaced at the stream's average rate.
    """
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            pts = [p.pts for p in container.demux(stream) if p.size > 0]
            time_base = stream.time_base
    except av.FFmpegError as e:
        raise DecodeError(f"cannot read: {one_line(e)}") from None
    if not pts:
        raise DecodeError("the video stream holds no frames")
    if any(p is None for p in pts):
        if not info.average_fps:
            raise DecodeError("frames carry no timestamps and the stream no frame rate")
        return np.arange(len(pts)) / info.average_fps
    ticks = np.sort(np.asarray(pts, dtype=np.int64))
    return (ticks - ticks[0]).astype(np.float64) * float(time_base)


# --------------------------------------------------------------------------- backends

class OpenedVideo(Protocol):
    def frames(self, indices: np.ndarray) -> Iterator[np.ndarray]:
        """RGB uint8 ``(H, W, 3)`` source frames (as stored, not rotated) for sorted ``indices``
        into the presentation order; raises :class:`BackendError` when it cannot read them."""

    def park(self) -> None:
        """Let go of what was decoded or read ahead of the next frame, before a long wait (may do nothing)."""

    def close(self) -> None: ...


class Backend(Protocol):
    name: str

    def open(self, path: str, info: MediaInfo, times: np.ndarray) -> OpenedVideo:
        """Raise :class:`BackendError` when this backend cannot handle the file."""


class DecordVideo:
    """decord's ``VideoReader`` read front to back.

    While its decoding thread has no frame ready, ``next()`` keeps reading packets into a queue
    without a bound (~20 per frame returned here), and that thread turns every one of them into
    an RGB frame, wanted yet or not. So while the caller waits -- on the networks, say -- decord
    fills memory with frames of the video ahead (800-1200 frames, 200-290 MiB, at the peak of a
    10-minute 320x240 video's extraction). :meth:`park` drops them by seeking, and the next frame
    is found again with an accurate seek from its keyframe.
    """

    def __init__(self, path: str, info: MediaInfo, times: np.ndarray):
        import decord

        decord.logging.set_level(decord.logging.QUIET)
        self._error = decord.DECORDError
        if info.rotation:
            raise BackendError(f"decord ignores rotation metadata ({info.rotation} degrees)")
        try:
            self._reader = decord.VideoReader(path, num_threads=1)
            own = self._reader.get_frame_timestamp(np.arange(len(self._reader)))[:, 0] if len(self._reader) else []
        except (decord.DECORDError, RuntimeError) as e:
            raise BackendError(f"decord: {one_line(e)}") from None
        if len(own) != len(times) or not np.allclose(own - own[0], times, atol=2e-3):
            raise BackendError(f"decord lists {len(own)} frames or other timestamps than the container's {len(times)}")
        self._shape = (info.height, info.width, 3)
        self._next = 0  # index of the frame next() returns
        self._parked = False

    def frames(self, indices: np.ndarray) -> Iterator[np.ndarray]:
        # Sequential next()/skip_frames(): get_batch() with gaps seeks, and is several times
        # slower and larger in memory (GBs at 1080p) than walking the stream once.
        for index in indices.tolist():
            try:
                if self._parked:
                    self._reader.seek_accurate(index)
                    self._parked = False
                elif index != self._next:
                    if index > self._next:
                        self._reader.skip_frames(index - self._next)
                    else:
                        self._reader.seek_accurate(index)
                frame = self._reader.next().asnumpy()
            except (self._error, RuntimeError, StopIteration) as e:
                raise BackendError(f"decord: {one_line(e) if str(e) else 'stopped early'} at frame {index}") from None
            self._next = index + 1
            if frame.shape != self._shape:
                raise BackendError(f"decord returned {frame.shape} frames, expected {self._shape}")
            yield frame

    def park(self) -> None:
        if self._reader is None or self._next == 0 or self._parked:
            return
        self._parked = True  # whatever happens here, the next frame is found by an accurate seek
        try:
            self._reader.seek(0)  # empties decord's queues; no frame is decoded
        except (self._error, RuntimeError):
            pass  # that seek, inside frames(), fails over to the next backend if decord is broken

    def close(self) -> None:
        self._reader = None


class DecordBackend:
    name = "decord"

    def open(self, path: str, info: MediaInfo, times: np.ndarray) -> OpenedVideo:
        return DecordVideo(path, info, times)


class PyAVVideo:
    def __init__(self, path: str, info: MediaInfo, times: np.ndarray):
        self._path = path
        self._count = len(times)

    def frames(self, indices: np.ndarray) -> Iterator[np.ndarray]:
        wanted = iter(indices.tolist())
        target = next(wanted, None)
        try:
            with av.open(self._path) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for j, frame in enumerate(container.decode(stream)):
                    if target is None:
                        return
                    if j == target:
                        yield frame.to_ndarray(format="rgb24")
                        target = next(wanted, None)
        except av.FFmpegError as e:
            raise BackendError(f"pyav: {one_line(e)}") from None
        if target is not None:
            raise BackendError(f"pyav: the decoder stopped before frame {target} of {self._count}")

    def park(self) -> None:
        pass  # decodes only what is asked for

    def close(self) -> None:
        pass


class PyAVBackend:
    name = "pyav"

    def open(self, path: str, info: MediaInfo, times: np.ndarray) -> OpenedVideo:
        return PyAVVideo(path, info, times)


#: every decoder by name; ``clipae-extract --decoders`` picks an order (they give identical frames)
BACKENDS: Registry[Backend] = Registry("decoder")
BACKENDS.add("decord", DecordBackend())
BACKENDS.add("pyav", PyAVBackend())
#: tried in this order, for opening and again when one fails while reading
DEFAULT_DECODERS = ("decord", "pyav")


def backends_named(names: Iterable[str]) -> list[Backend]:
    """The backends of ``names`` in that order; an unknown name is a ``KeyError`` naming the known ones."""
    return [BACKENDS[n] for n in names]


# --------------------------------------------------------------------------- resampling

def video_duration(times: np.ndarray, average_fps: float | None = None) -> float:
    """Seconds covered by frames presented at ``times`` (see the module docstring)."""
    n = len(times)
    span = float(times[-1] - times[0]) if n else 0.0
    if n > 1 and span > 0:
        return span * n / (n - 1)
    return 1.0 / average_fps if average_fps else 1.0 / 25.0


def source_indices(times: np.ndarray, fps: float, num_targets: int) -> np.ndarray:
    """``(num_targets,)`` index of the source frame each target frame shows.

    Target ``k`` shows the last source frame presented before ``(k + 0.5) / fps``; a frame
    presented exactly there belongs to the next target, as ffmpeg's ``fps`` filter rounds.
    """
    centres = (np.arange(num_targets, dtype=np.float64) + 0.5) / fps
    return np.clip(np.searchsorted(times, centres - 1e-6, side="left") - 1, 0, len(times) - 1)


def resized_size(h: int, w: int, short_side: int) -> tuple[int, int]:
    """``(H, W)`` of an ``h x w`` frame resized so its short side is ``short_side`` (torchvision's size rule)."""
    if min(h, w) == short_side:
        return h, w
    if h <= w:
        return short_side, int(short_side * w / h)
    return int(short_side * h / w), short_side


def check_frame_size(info: "MediaInfo", short_side: int) -> None:
    """A :class:`DecodeError` for frames too large to decode or, once resized, longer than
    :data:`MAX_LONG_SIDE` (an extreme aspect ratio)."""
    if info.width * info.height > MAX_SOURCE_PIXELS:
        raise DecodeError(f"frames of {info.width}x{info.height} pixels exceed the limit of {MAX_SOURCE_PIXELS} pixels")
    h, w = resized_size(info.height, info.width, short_side)
    if max(h, w) > MAX_LONG_SIDE:
        raise DecodeError(f"frames of {info.width}x{info.height} would be {w}x{h} with the short side at {short_side}; "
                          f"the long side is limited to {MAX_LONG_SIDE} (aspect ratio up to "
                          f"{MAX_LONG_SIDE / short_side:g}:1)")


def resize_short_side(frames: np.ndarray, short_side: int) -> np.ndarray:
    """``(n, H, W, 3)`` uint8 resized so ``min(H, W) == short_side`` (torchvision's size rule)."""
    h, w = frames.shape[1:3]
    if min(h, w) == short_side:
        return np.ascontiguousarray(frames)
    size = resized_size(h, w, short_side)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)
    y = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return y.permute(0, 2, 3, 1).contiguous().numpy()


def upright(frame: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a decoded frame by the container's rotation (degrees counter-clockwise)."""
    return np.rot90(frame, k=rotation // 90) if rotation else frame


# --------------------------------------------------------------------------- one video

@dataclass(frozen=True)
class VideoTiming:
    """Facts of the source video (for the manifest) and its length on the grid."""

    duration_s: float
    native_fps: float
    num_frames: int          # source frames
    num_grid_frames: int     # frames after resampling to the grid's fps


class VideoDecoder:
    """Frames of one video on a grid of ``fps`` frames per second.

    ``open()`` probes the file and finds the first backend that can read it; ``timing`` is then
    known without decoding a frame. ``chunks()`` yields the resampled frames in order as
    ``(n, H, W, 3)`` uint8 arrays of at most ``chunk`` frames.
    """

    def __init__(self, path: str, fps: float, settings: FrameSettings = FrameSettings(),
                 backends: list[Backend] | None = None, chunk: int = 32) -> None:
        self.path = str(path)
        self.fps = fps
        self.settings = settings
        self.backends = backends_named(DEFAULT_DECODERS) if backends is None else list(backends)
        self.chunk = chunk
        self.info: MediaInfo | None = None
        self.timing: VideoTiming | None = None
        self.backend: str | None = None
        self._times: np.ndarray | None = None
        self._video: OpenedVideo | None = None
        self._next_backend = 0
        self._failures: list[str] = []

    def open(self) -> VideoTiming:
        self.info = probe(self.path)
        check_frame_size(self.info, self.settings.short_side)
        self._times = frame_times(self.path, self.info)
        duration = video_duration(self._times, self.info.average_fps)
        declared = self.info.declared_duration_s
        if declared and declared - duration > max(TRUNCATION_TOLERANCE_S, TRUNCATION_TOLERANCE_FRACTION * declared):
            raise DecodeError(f"truncated or corrupt: frames cover {duration:.2f} s of the declared {declared:.2f} s")
        grid_frames = frames_in(duration, self.fps)
        self.timing = VideoTiming(duration, len(self._times) / duration, len(self._times), grid_frames)
        return self.timing

    def _open_next(self) -> OpenedVideo:
        """The next backend of the list that accepts the file."""
        while self._next_backend < len(self.backends):
            backend = self.backends[self._next_backend]
            self._next_backend += 1
            try:
                video = backend.open(self.path, self.info, self._times)
            except BackendError as e:
                self._failures.append(str(e))
                continue
            self.backend = backend.name
            return video
        raise DecodeError("cannot decode: " + "; ".join(self._failures or ["no decoder available"]))

    def chunks(self) -> Iterator[np.ndarray]:
        """Resampled, upright, resized frames in order, ``(n, H, W, 3)`` uint8 with ``n <= chunk``."""
        if self.timing is None:
            self.open()
        self._video = self._open_next()
        targets = source_indices(self._times, self.fps, self.timing.num_grid_frames)
        sources, first_target = np.unique(targets, return_index=True)
        counts = np.diff(np.append(first_target, len(targets)))  # targets showing each source frame
        done = 0  # source frames already passed on
        pending: list[np.ndarray] = []  # upright source frames at native size, not yet resized
        repeats: list[int] = []
        while done < len(sources):
            try:
                for frame in self._video.frames(sources[done:]):
                    pending.append(upright(frame, self.info.rotation))
                    repeats.append(int(counts[done]))
                    done += 1
                    if sum(repeats) >= self.chunk or len(pending) * frame.nbytes >= RESIZE_BYTES:
                        yield self._resized(pending, repeats)
                        pending, repeats = [], []
                if done < len(sources):
                    raise BackendError(f"{self.backend}: returned only {done} of {len(sources)} frames")
            except BackendError as e:  # carry on from frame `done` with the next backend
                self._failures.append(str(e))
                self._video.close()
                self._video = self._open_next()
        if pending:
            yield self._resized(pending, repeats)

    def _resized(self, frames: list[np.ndarray], repeats: list[int]) -> np.ndarray:
        """Resize source frames together (much faster than one by one) and repeat each as the grid needs."""
        small = resize_short_side(np.stack(frames), self.settings.short_side)
        return small if all(r == 1 for r in repeats) else np.repeat(small, repeats, axis=0)

    def park(self) -> None:
        """Before waiting long between two chunks: the backend drops what it decoded ahead (decord)."""
        if self._video is not None:
            self._video.park()

    def close(self) -> None:
        if self._video is not None:
            self._video.close()
            self._video = None
