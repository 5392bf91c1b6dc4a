"""The extraction stage: videos in, one feature file per stream and one manifest line per video out.

- :func:`extract_video` turns one video into ``{stream: (num_snippets, dim) float32}`` and the
  facts of its manifest line, in memory (``clipae-localize`` uses it directly).
- :func:`run` does it for many videos (:class:`RunConfig`): it skips what an earlier run already
  made, writes feature files atomically and appends a manifest line only once they are in place,
  records bad videos as ``failed`` lines and goes on, and splits the work between ``torchrun``
  ranks. Both go through :func:`extract_video`.

Streams come from the registry in :mod:`clipae.extractors.base`; nothing here knows which
streams exist.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
import traceback
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Hashable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.dist import Ranks
from ..core.errors import BadInput
from ..core.fsio import video_files
from ..core.grid import SnippetGrid
from ..core.interrupt import StopSignals
from ..core.weights import WeightsError
from ..decoding.audio import AudioSettings
from ..decoding.decode import DEFAULT_DECODERS, FrameSettings, InputError, one_line
from ..decoding.packing import VideoDecoded, VideoFailed, VideoOpened, pack
from ..decoding.snippets import DEFAULT_STALL_TIMEOUT_S, BatchSource, SnippetSource, VideoFacts, VideoJob
from ..decoding.workers import DecodePool, auto_decode_workers
from ..extractors.base import GPU_BATCH_SIZE, Extractor, ExtractorOptions, SnippetBatch, get_stream
from . import manifest as mf

#: the streams of DESIGN.md, extracted when no ``--streams`` is given
DEFAULT_STREAMS = ("i3d_rgb", "i3d_flow", "clip", "vggish")
LIST_SUFFIXES = {".txt", ".lst", ".list"}
#: a video gets its own progress bar when it has more snippets than this
INNER_BAR_SNIPPETS = 256


class ExtractionError(BadInput):
    """A problem with the run as a whole (bad arguments, unreadable video list); one line."""


class NonFiniteError(InputError):
    """A stream produced NaN or infinite values for a video (the video fails; nothing is written)."""


# --------------------------------------------------------------------------- streams and settings

def build_extractors(names: Sequence[str], options: ExtractorOptions | Mapping[str, ExtractorOptions] | None = None,
                     ) -> dict[str, Extractor]:
    """``{name: extractor}`` built from the registry (weights resolved and loaded here).

    Any failure (unknown stream, bad option, missing or mismatched weights) is one
    :class:`ExtractionError` line naming the stream.
    """
    out = {}
    for name in names:
        opts = options.get(name, ExtractorOptions()) if isinstance(options, Mapping) else (options or ExtractorOptions())
        try:
            out[name] = get_stream(name)(opts)
        except KeyError as e:
            raise ExtractionError(e.args[0]) from None
        except WeightsError as e:
            raise ExtractionError(str(e)) from None
        except Exception as e:  # a stream's own option or set-up error: one line, the run cannot start
            raise ExtractionError(f"stream {name}: {type(e).__name__}: {one_line(e)}") from None
    return out


def stream_settings(extractor: Extractor, frame_settings: FrameSettings = FrameSettings(),
                    audio_settings: AudioSettings = AudioSettings()) -> dict:
    """What made a stream's numbers: ``extractor.settings()``, its ``weights_id`` and the decoding of its inputs."""
    decode = {}
    if "frames" in extractor.inputs:
        decode["frames"] = asdict(frame_settings)
    if "audio" in extractor.inputs:
        decode["audio"] = {**asdict(audio_settings), "window": extractor.audio_window}
    return {**extractor.settings(), "weights_id": extractor.weights_id, "decode": decode}


def video_id_of(path: str | os.PathLike) -> str:
    return Path(path).stem


# --------------------------------------------------------------------------- one video

def video_job(path: str | os.PathLike, extractors: Iterable[Extractor], grid: SnippetGrid, *,
              num_snippets: int | None = None, frame_settings: FrameSettings = FrameSettings(),
              audio_settings: AudioSettings = AudioSettings(), decoders: Sequence[str] = DEFAULT_DECODERS) -> VideoJob:
    """What to decode of ``path`` for these extractors (what they read, nothing more)."""
    extractors = list(extractors)
    return VideoJob(str(path), grid,
                    frames=any("frames" in ex.inputs for ex in extractors),
                    audio_window=max([ex.audio_window for ex in extractors if "audio" in ex.inputs], default=0),
                    batch_size=batch_size_of(extractors), num_snippets=num_snippets,
                    frame_settings=frame_settings, audio_settings=audio_settings, decoders=tuple(decoders))


def open_source(path: str | os.PathLike, extractors: Iterable[Extractor], grid: SnippetGrid, *,
                after: SnippetSource | None = None, **job_options) -> SnippetSource:
    """Start decoding ``path`` for these extractors in a background thread (see :func:`video_job`)."""
    return SnippetSource(video_job(path, extractors, grid, **job_options), after=after)


def default_batch_size(streams: list[str], device: torch.device) -> int:
    """The shared batch of a run without ``--batch-size``: the smallest ``cpu_batch_size`` of its
    streams on the CPU (smaller batches were as fast there and need less memory, docs/speed.md),
    :data:`~clipae.extractors.base.GPU_BATCH_SIZE` elsewhere."""
    if device.type == "cpu":
        return min(get_stream(s).cpu_batch_size for s in streams)
    return GPU_BATCH_SIZE


def batch_size_of(extractors: Iterable[Extractor]) -> int:
    return min(ex.options.batch_size for ex in extractors)


@dataclass
class VideoResult:
    """One video out of :func:`extract_videos`: its features, or the error that stopped it."""

    key: Hashable
    facts: VideoFacts | None = None
    features: dict[str, np.ndarray] | None = None   # {stream: (num_snippets, dim) float32}
    error: BaseException | None = None
    trace: str = ""                                  # the traceback of an unexpected error


@dataclass
class _Video:
    facts: VideoFacts
    extractors: dict[str, Extractor]
    parts: dict[str, list[np.ndarray]]
    bar: tqdm
    rows: int = 0
    decoded: bool = False


#: freed heap memory (bytes) that glibc may keep before it is handed back (see :func:`_trim_heap`)
TRIM_FREE_BYTES = 64 << 20
#: where glibc cannot say how much it keeps (before 2.33): seconds between two hand-backs
TRIM_EVERY_S = 5.0


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (``malloc.h``, glibc >= 2.33): every field a ``size_t``."""
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _libc_function(name: str, restype=ctypes.c_int):
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):  # not glibc, or an older one
        return None
    function.restype = restype
    return function


_MALLOC_TRIM = _libc_function("malloc_trim")
_MALLINFO2 = _libc_function("mallinfo2", _MallInfo2)


def heap_free_bytes() -> int | None:
    """Bytes of freed memory glibc's arenas hold (``mallinfo2().fordblks``); None outside glibc >= 2.33."""
    return None if _MALLINFO2 is None else int(_MALLINFO2().fordblks)


def _trim_heap(since_last_s: float = 0.0) -> bool:
    """Give freed heap memory back to the system (glibc's ``malloc_trim``) once the arenas hold
    more than :data:`TRIM_FREE_BYTES` of it; True if it did. A glibc without ``mallinfo2``
    trims when ``since_last_s`` (seconds since the last trim) exceeds :data:`TRIM_EVERY_S`.

    Batches are allocated in the decoding thread and freed in this one, and the networks'
    temporaries come and go; glibc keeps such memory in its arenas. Without a trim the peak memory
    of a 10-minute video grew ~20 % over a 1-minute one (PyAV, ``clipae-bench extract``); with the
    I3D, 200-240 MiB of the process's peak were such freed memory (docs/speed.md). Looked at after
    every batch: ``mallinfo2`` takes microseconds, a trim ~20 ms.
    """
    if _MALLOC_TRIM is None:
        return False
    free = heap_free_bytes()
    due = free > TRIM_FREE_BYTES if free is not None else since_last_s > TRIM_EVERY_S
    if not due:
        return False
    _MALLOC_TRIM(0)
    return True


#: glibc malloc arenas of a ``clipae-extract`` process (see :func:`limit_malloc_arenas`)
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8          # mallopt's parameter number in glibc's malloc.h


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` for this process; True if the cap was set.

    glibc gives each thread that allocates concurrently an arena of its own (up to 8 per core) and
    keeps freed memory in them. Frames decoded in one thread and the networks' temporaries of
    another then fill separate arenas: with decord and ``vggish`` the peak memory of a 10-minute
    video was 1.44x that of a 1-minute one, with two arenas 1.24x and no slower (medians of three
    runs, docs/benchmarks.md). Nothing is done where ``MALLOC_ARENA_MAX`` is set in the environment (glibc
    has applied it already) or outside glibc. ``clipae-extract`` calls it before any thread starts.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(_M_ARENA_MAX, int(arenas)))


def _stream_rows(name: str, ex: Extractor, batch: SnippetBatch) -> np.ndarray:
    """``(len(batch), *ex.row_shape)`` float32 rows of one stream (``(B, dim)``, or ``(B, crops, dim)``
    with ``--keep-crops``); zeros for an audio stream on a batch without audio."""
    if "audio" in ex.inputs and batch.audio is None:
        return np.zeros((len(batch), *ex.row_shape), np.float32)  # no audio track: masked later
    rows = np.asarray(ex(batch), dtype=np.float32)
    if rows.shape != (len(batch), *ex.row_shape):
        raise RuntimeError(f"stream {name} returned {rows.shape} for {len(batch)} snippets of shape {ex.row_shape}")
    finite = np.isfinite(rows)
    if not finite.all():
        raise NonFiniteError(f"non-finite values in {name} ({finite.size - int(finite.sum())} of {finite.size} "
                             "values are NaN or infinite)")
    return rows


def extract_videos(videos: Iterable[tuple[Hashable, Mapping[str, Extractor], SnippetSource]], batch_size: int,
                   progress: bool = False, across_videos: bool = True,
                   stopped: Callable[[], bool] | None = None) -> Iterator[VideoResult]:
    """Features of many videos, in memory, the networks' batches filled across videos
    (:func:`clipae.decoding.packing.pack`).

    videos: ``(key, {stream: extractor}, source)`` in order; a source is opened only when the
            iterator is asked for it, and closed once read
    Yields a :class:`VideoResult` per video as soon as it is complete or has failed. A video
    that cannot be decoded fails with its :class:`InputError`. When a stream fails on a batch
    shared by several videos, each video's rows are tried alone, so only the videos the
    failure belongs to fail. ``across_videos=False`` keeps every batch within one video, so a
    video's rows do not depend on its neighbours (on a GPU, batch composition can change the
    last bits of a result). ``stopped()`` is asked before each network batch: once it says
    True, iteration ends without the videos not yet complete.
    """
    live: dict[Hashable, _Video] = {}
    streams: dict[Hashable, Mapping[str, Extractor]] = {}

    def grouped():
        for key, extractors, source in videos:
            streams[key] = extractors
            yield key, (tuple(extractors), None if across_videos else key), source

    def failed(key: Hashable, error: BaseException, trace: str = "") -> VideoResult:
        video = live.pop(key)
        video.bar.close()
        streams.pop(key, None)
        return VideoResult(key, video.facts, error=error, trace=trace)

    def finished(key: Hashable) -> VideoResult:
        video = live[key]
        if video.rows != video.facts.num_snippets:
            return failed(key, RuntimeError(f"{video.rows} rows for {video.facts.num_snippets} snippets"))
        video = live.pop(key)
        video.bar.close()
        streams.pop(key, None)
        return VideoResult(key, video.facts, {name: np.concatenate(rows) for name, rows in video.parts.items()})

    def run(batch: SnippetBatch, extractors: Mapping[str, Extractor]) -> dict[str, np.ndarray]:
        return {name: _stream_rows(name, ex, batch) for name, ex in extractors.items()}

    trimmed = time.monotonic()
    with torch.no_grad():
        for event in pack(grouped(), batch_size):
            if stopped is not None and stopped():
                for video in live.values():
                    video.bar.close()
                return
            if _trim_heap(time.monotonic() - trimmed):
                trimmed = time.monotonic()
            if isinstance(event, VideoOpened):
                n = event.facts.num_snippets
                bar = tqdm(total=n, desc=str(event.key), unit="snippet",
                           leave=False, disable=not progress or n <= INNER_BAR_SNIPPETS)
                live[event.key] = _Video(event.facts, streams[event.key], {name: [] for name in streams[event.key]}, bar)
            elif isinstance(event, VideoFailed):
                if event.key in live:
                    yield failed(event.key, event.error)
                else:  # it failed before it opened
                    yield VideoResult(event.key, error=event.error)
                streams.pop(event.key, None)
            elif isinstance(event, VideoDecoded):
                if event.key in live:
                    live[event.key].decoded = True
            else:  # Packed
                # (video, first row, rows) of the videos still live, in the batch of their rows only:
                # the rows of a video that failed earlier are left out, so they cannot fail the others
                spans, kept, start, live_rows = [], [], 0, 0
                for key, rows in event.parts:
                    if key in live:
                        spans.append((key, live_rows, rows))
                        kept.append(event.batch.rows(start, start + rows))
                        live_rows += rows
                    start += rows
                if not spans:
                    continue
                batch = event.batch if live_rows == start else SnippetBatch.concat(kept)
                extractors = live[spans[0][0]].extractors
                try:
                    out = run(batch, extractors)
                    pieces = {key: {n: a[first:first + rows] for n, a in out.items()} for key, first, rows in spans}
                except Exception as e:
                    if len(spans) == 1:
                        yield failed(spans[0][0], e, traceback.format_exc())
                        continue
                    pieces = {}  # try each video alone, to fail only those the error belongs to
                    for key, first, rows in spans:
                        try:
                            pieces[key] = run(batch.rows(first, first + rows), extractors)
                        except Exception as e:
                            yield failed(key, e, traceback.format_exc())
                for key, _, rows in spans:
                    if key in pieces:
                        video = live[key]
                        for name, array in pieces[key].items():
                            video.parts[name].append(array)
                        video.rows += rows
                        video.bar.update(rows)
            for key in [k for k, v in live.items() if v.decoded and v.rows >= v.facts.num_snippets]:
                yield finished(key)
    for key in list(live):  # every batch was run, yet fewer rows than the video's snippets
        yield finished(key)


def video_record(path: str | os.PathLike, facts: VideoFacts, extractors: Mapping[str, Extractor], grid: SnippetGrid,
                 frame_settings: FrameSettings = FrameSettings(), audio_settings: AudioSettings = AudioSettings()) -> dict:
    """The manifest line of a video extracted with ``extractors``, without feature paths."""
    settings = {name: stream_settings(ex, frame_settings, audio_settings) for name, ex in extractors.items()}
    return {
        "video_id": video_id_of(path),
        "source": str(path),
        "status": "ok",
        "duration_s": round(facts.duration_s, 6),
        "native_fps": round(facts.native_fps, 6),
        "num_frames": facts.num_frames,
        **grid.as_dict(),
        "num_snippets": facts.num_snippets,
        "has_audio": facts.has_audio,
        "streams": {name: {"dim": ex.dim, "dtype": "float32", "settings": settings[name],
                           "options": dict(ex.options.extra)}  # to extract one more video the same way
                    for name, ex in extractors.items()},
        "config_hash": mf.config_hash(grid, settings),
        "weights": {name: ex.weights_id for name, ex in extractors.items()},
    }


def extract_video(path: str | os.PathLike, streams: Sequence[str | Extractor], grid: SnippetGrid = SnippetGrid(),
                  options: ExtractorOptions | Mapping[str, ExtractorOptions] | None = None, *,
                  num_snippets: int | None = None, source: SnippetSource | None = None,
                  progress: bool = False, frame_settings: FrameSettings = FrameSettings(),
                  audio_settings: AudioSettings = AudioSettings(), decoders: Sequence[str] = DEFAULT_DECODERS,
                  ) -> tuple[dict, dict[str, np.ndarray]]:
    """Features of one video, in memory.

    streams:      stream names (built with ``options``) or extractors already built
    num_snippets: rows to produce instead of the grid's count (used to add streams to a line)
    source:       a source already decoding this video
    decoders:     video decoders to try in order (see :data:`clipae.decoding.decode.BACKENDS`)

    Returns ``(record, features)``: the manifest line without feature paths (``streams[name]``
    holds ``dim``, ``dtype``, ``settings``) and ``{name: (num_snippets, dim) float32}``.
    A stream that reads audio gets all-zero rows for a video without audio.
    Raises :class:`InputError` for a video that cannot be decoded.
    """
    named = [s for s in streams if isinstance(s, str)]
    built = build_extractors(named, options) if named else {}
    extractors = {s.name: s for s in streams if isinstance(s, Extractor)} | built
    if not extractors:
        raise ValueError("extract_video needs at least one stream")
    if source is None:
        source = open_source(path, extractors.values(), grid, num_snippets=num_snippets, frame_settings=frame_settings,
                             audio_settings=audio_settings, decoders=decoders)
    [result] = extract_videos([(video_id_of(path), extractors, source)], batch_size_of(extractors.values()), progress)
    if result.error is not None:
        raise result.error
    return video_record(path, result.facts, extractors, grid, frame_settings, audio_settings), result.features


# --------------------------------------------------------------------------- many videos

def find_videos(spec: str | os.PathLike) -> list[Path]:
    """Videos named by ``spec``: a folder (searched recursively by file suffix), a text file
    listing paths (``.txt``/``.lst``/``.list``; one per line, ``#`` comments, relative to the
    list's folder), or one video file (any other file)."""
    spec = Path(spec)
    if spec.is_dir():
        return video_files(spec)
    if not spec.is_file():
        raise ExtractionError(f"{spec}: no such file or folder")
    if spec.suffix.lower() in LIST_SUFFIXES:
        try:
            lines = spec.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ExtractionError(f"cannot read the video list {spec}: {e}") from None
        paths = [Path(line.strip()) for line in lines if line.strip() and not line.lstrip().startswith("#")]
        return [p if p.is_absolute() else spec.parent / p for p in paths]
    return [spec]


@dataclass
class RunConfig:
    videos: list[Path]
    out: Path
    streams: list[str]
    grid: SnippetGrid = field(default_factory=SnippetGrid)
    options: dict[str, ExtractorOptions] = field(default_factory=dict)
    overwrite: bool = False
    progress: bool = True
    frame_settings: FrameSettings = field(default_factory=FrameSettings)
    audio_settings: AudioSettings = field(default_factory=AudioSettings)
    decoders: tuple[str, ...] = DEFAULT_DECODERS  # video decoders, tried in this order
    decode_workers: int | None = 0  # processes decoding videos side by side; 0: a thread; None: auto
    cross_video_batches: bool = True  # short videos share network batches
    preset: dict | None = None  # ``--preset``: its name and the options that overrode it (manifest)
    hash_sources: bool = False  # bind lines to their video's sha256 too (reads every video on every run)
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S  # a decoder silent this long fails its video


@dataclass
class Summary:
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    snippets: int = 0
    video_s: float = 0.0
    wall_s: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    stopped: str = ""  # why the run stopped early (an output file could not be written), else ""
    stopped_by: str | None = None  # the signal that stopped the run early
    left: int = 0                  # videos not done because of it

    @classmethod
    def combine(cls, parts: list["Summary"]) -> "Summary":
        return cls(sum(p.ok for p in parts), sum(p.failed for p in parts), sum(p.skipped for p in parts),
                   sum(p.snippets for p in parts), sum(p.video_s for p in parts), max(p.wall_s for p in parts),
                   [f for p in parts for f in p.failures], next((p.stopped for p in parts if p.stopped), ""))

    def lines(self) -> list[str]:
        speed = f" ({self.video_s / self.wall_s:.2f}x real time)" if self.wall_s > 0 and self.video_s else ""
        return [f"failed {vid}: {err}" for vid, err in self.failures] + [
            f"{self.ok} ok, {self.failed} failed, {self.skipped} already done; {self.snippets} snippets, "
            f"{self.video_s:.1f} s of video in {self.wall_s:.1f} s{speed}"] + (
            [f"stopped by {self.stopped_by}: {self.left} videos not done; run the same command again to resume"]
            if self.stopped_by else [])


@dataclass
class VideoPlan:
    """What to do for one video: ``streams`` to extract, ``keep`` entries of its last ok line."""

    video_id: str
    path: Path
    streams: list[str]
    keep: dict[str, dict] = field(default_factory=dict)
    base: dict | None = None  # the last ok line the kept streams come from
    source: dict | None = None  # the video file as seen now (:func:`clipae.pipeline.manifest.source_binding`)


def _file_matches(out: Path, record: dict, name: str) -> bool:
    """The stream's file has the line's shape and, where the line records one, its sha256."""
    entry = record["streams"][name]
    try:
        array = np.load(out / entry["path"], mmap_mode="r", allow_pickle=False)
        shape = array.shape
        del array
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if shape[:1] != (record["num_snippets"],) or shape[-1] != entry.get("dim") or len(shape) not in (2, 3):
        return False
    return "sha256" not in entry or mf.file_matches_digest(out / entry["path"], entry["sha256"])


def _same_grid(record: dict, grid: SnippetGrid) -> bool:
    try:
        return SnippetGrid.from_record(record) == grid and int(record["num_snippets"]) >= 1
    except (KeyError, TypeError, ValueError):
        return False


def plan_video(video_id: str, path: Path, last_ok: dict | None, wanted: Mapping[str, dict], grid: SnippetGrid,
               out: Path, overwrite: bool, source: dict | None = None) -> VideoPlan:
    """Compare the requested streams' settings with the video's last ok line.

    source: the video file as seen now (:func:`clipae.pipeline.manifest.source_binding`)

    A requested stream is kept only when the line was made from this very file (its
    ``source_file`` matches ``source``), with identical settings, and its file still holds the
    bytes the line's sha256 names; the rest are extracted. Streams of the line that were not
    requested stay as they are while their files are intact (imported features, for one).
    Nothing to extract: skip. A line on another grid, or made from another file or from this
    file before it changed, is not reused at all.
    """
    if last_ok is None or not _same_grid(last_ok, grid):
        return VideoPlan(video_id, path, list(wanted), source=source)
    bound = last_ok.get("source_file")
    if bound is not None and not mf.same_source(bound, source):
        return VideoPlan(video_id, path, list(wanted), source=source)
    keep = {}
    for name, entry in last_ok.get("streams", {}).items():
        if name in wanted and (overwrite or bound is None or "sha256" not in entry
                               or entry.get("settings") != wanted[name]):
            continue
        if _file_matches(out, last_ok, name):
            keep[name] = entry
    return VideoPlan(video_id, path, [n for n in wanted if n not in keep], keep, last_ok if keep else None, source)


def merge_record(plan: VideoPlan, fresh: dict, grid: SnippetGrid, audio_streams: set[str]) -> dict:
    """The fresh line plus the kept streams of the video's last ok line, under one new ``config_hash``."""
    if plan.base is None:
        return fresh
    record = dict(fresh)
    record["streams"] = {**plan.keep, **fresh["streams"]}
    record["weights"] = {**{n: w for n, w in plan.base.get("weights", {}).items() if n in plan.keep}, **fresh["weights"]}
    mf.rehash(record, grid)
    if not audio_streams & set(fresh["streams"]) and "has_audio" in plan.base:
        record["has_audio"] = plan.base["has_audio"]
    return record


class Runner:
    """Extracts every video of a :class:`RunConfig` into ``config.out`` (one rank's share under torchrun)."""

    def __init__(self, config: RunConfig, ranks: Ranks | None = None, stop: StopSignals | None = None) -> None:
        self.config = config
        self.stop = stop
        self.ranks = ranks or Ranks.from_env()
        self.out = Path(config.out)
        self.extractors: dict[str, Extractor] = {}
        if self.ranks.distributed:
            self.manifest = mf.shard_path(self.out, self.ranks.rank)
            self.error_log = self.out / f"errors.rank{self.ranks.rank}.log"
        else:
            self.manifest = self.out / mf.MANIFEST_NAME
            self.error_log = self.out / "errors.log"

    def run(self) -> Summary:
        """All ranks: tidy up, plan, extract this rank's share, merge the shards. Returns the total."""
        cfg, ranks = self.config, self.ranks
        started = time.monotonic()
        videos = [(video_id_of(p), Path(p)) for p in cfg.videos]
        _check_unique(videos)
        summary = Summary()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            summary.stopped = str(mf.output_error(self.out, e))
            return summary
        device = next(iter(cfg.options.values()), ExtractorOptions()).device
        with open_decoding(decode_workers_for(cfg.decode_workers, device), cfg.stall_timeout_s) as decoding:  # workers fork before any network is built
            self.extractors = build_extractors(cfg.streams, cfg.options)
            if ranks.rank == 0:
                try:
                    mf.merge_shards(self.out)      # lines of an interrupted torchrun
                    _remove_partial_files(self.out)
                except mf.OutputError as e:
                    summary.stopped = str(e)
            ranks.barrier()
            try:
                _, last_ok = mf.last_records(self.out / mf.MANIFEST_NAME)
            except OSError as e:
                raise ExtractionError(f"cannot read {e.filename or self.out / mf.MANIFEST_NAME}: "
                                      f"{e.strerror or e}") from None
            wanted = {n: stream_settings(ex, cfg.frame_settings, cfg.audio_settings) for n, ex in self.extractors.items()}
            plans = [plan_video(vid, path, last_ok.get(vid), wanted, cfg.grid, self.out, cfg.overwrite,
                                mf.source_binding(path, cfg.hash_sources))
                     for vid, path in videos]
            todo = [p for p in plans if p.streams]
            mine = [] if summary.stopped else todo[ranks.rank::ranks.world_size]
            summary.skipped = len(plans) - len(todo) if ranks.rank == 0 else 0
            ranks.barrier()  # every rank planned from the same manifest before anyone writes
            show = cfg.progress and ranks.rank == 0
            by_id = {plan.video_id: plan for plan in mine}
            stopped = (lambda: self.stop.requested) if self.stop is not None else None
            with tqdm(total=len(mine), desc="videos", unit="video", disable=not show) as bar:
                sources = self._sources(mine, decoding)
                try:
                    with contextlib.closing(extract_videos(sources, batch_size_of(self.extractors.values()), show,
                                                           across_videos=cfg.cross_video_batches,
                                                           stopped=stopped)) as results:
                        for result in results:
                            try:
                                self._one(by_id[result.key], result, summary)
                            except mf.OutputError as e:  # disk full, read-only, ...: stop; what is written stays valid
                                summary.stopped = str(e)
                                break
                            bar.update(1)
                            if stopped is not None and stopped():
                                break
                finally:
                    sources.close()  # the videos still decoding
        summary.wall_s = time.monotonic() - started
        if self.stop is not None and self.stop.requested:
            # no barrier: every rank got the signal; the next run merges the shards
            summary.stopped_by = signal.Signals(self.stop.signum).name
            summary.left = len(mine) - summary.ok - summary.failed
            return summary
        ranks.barrier()
        if ranks.distributed and ranks.rank == 0:
            try:
                mf.merge_shards(self.out)
            except mf.OutputError as e:
                summary.stopped = summary.stopped or str(e)
        total = Summary.combine(ranks.gather(summary))
        return total

    def _sources(self, plans: list[VideoPlan], decoding: "ThreadDecoding | DecodePool"
                 ) -> Iterator[tuple[str, dict[str, Extractor], BatchSource]]:
        """``(video_id, extractors, source)`` of each plan in order (see :func:`sources_ahead`)."""
        cfg = self.config
        jobs = ((plan, video_job(plan.path, [self.extractors[n] for n in plan.streams], cfg.grid,
                                 num_snippets=plan.base["num_snippets"] if plan.base else None,
                                 frame_settings=cfg.frame_settings, audio_settings=cfg.audio_settings,
                                 decoders=cfg.decoders)) for plan in plans)
        for plan, source in sources_ahead(jobs, decoding):
            yield plan.video_id, {n: self.extractors[n] for n in plan.streams}, source

    def _one(self, plan: VideoPlan, result: VideoResult, summary: Summary) -> None:
        cfg = self.config
        if isinstance(result.error, InputError):
            self._failed(plan, str(result.error), summary)
            return
        try:
            if result.error is not None:
                raise result.error
            extractors = {n: self.extractors[n] for n in plan.streams}
            fresh = video_record(plan.path, result.facts, extractors, cfg.grid, cfg.frame_settings, cfg.audio_settings)
            fresh["video_id"] = plan.video_id
            if cfg.preset is not None:
                fresh["preset"] = cfg.preset
            fresh["source_file"] = plan.source
            for name, array in result.features.items():
                rel = f"features/{name}/{plan.video_id}.npy"
                digest = mf.save_array_atomic(self.out / rel, array)
                fresh["streams"][name] = {"path": rel, "sha256": digest, **fresh["streams"][name]}
            audio_streams = {n for n, ex in self.extractors.items() if "audio" in ex.inputs}
            record = merge_record(plan, fresh, cfg.grid, audio_streams)
        except mf.OutputError:
            raise  # the run stops (Runner.run)
        except Exception as e:  # a bug: recorded, traceback to the log, run goes on
            try:
                with open(self.error_log, "a", encoding="utf-8") as log:
                    log.write(f"--- {plan.video_id} ({plan.path})\n{result.trace or traceback.format_exc()}\n")
            except OSError as log_error:
                raise mf.output_error(self.error_log, log_error) from None
            self._failed(plan, f"internal error {type(e).__name__}: {one_line(e)} (traceback in {self.error_log.name})",
                         summary)
            return
        mf.append_record(self.manifest, record)
        summary.ok += 1
        summary.snippets += record["num_snippets"]
        summary.video_s += record["duration_s"]

    def _failed(self, plan: VideoPlan, reason: str, summary: Summary) -> None:
        reason = " ".join(reason.split())
        mf.append_record(self.manifest, {"video_id": plan.video_id, "source": str(plan.path),
                                         "status": "failed", "error": reason})
        summary.failed += 1
        summary.failures.append((plan.video_id, reason))


def decode_workers_for(workers: int | None, device: torch.device) -> int:
    """``--decode-workers``: the number given, or for ``None`` (auto) :func:`auto_decode_workers`."""
    return auto_decode_workers(device) if workers is None else workers


def open_decoding(workers: int, stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S) -> "ThreadDecoding | DecodePool":
    """``workers`` decoding processes, or a thread for 0; a decoder silent for ``stall_timeout_s``
    fails its video (``stalled: no frames for N s``)."""
    if workers > 0:
        return DecodePool(workers, stall_timeout_s=stall_timeout_s)
    return ThreadDecoding(stall_timeout_s)


def sources_ahead(items: Iterable[tuple[object, VideoJob]], decoding: "ThreadDecoding | DecodePool"
                  ) -> Iterator[tuple[object, BatchSource]]:
    """``(item, source)`` for each ``(item, job)`` in order, ``decoding.size`` videos decoding ahead.

    A source is opened once an earlier one was read and closed (so one of a pool's workers is
    free); the ones still open when the caller stops are closed here.
    """
    ahead: deque[tuple[object, BatchSource]] = deque()
    todo = iter(items)

    def fill() -> None:
        while len(ahead) < decoding.size and (item := next(todo, None)) is not None:
            ahead.append((item[0], decoding.open(item[1], after=ahead[-1][1] if ahead else None)))

    try:
        fill()
        while ahead:
            yield ahead.popleft()
            fill()
    finally:
        for _, source in ahead:
            source.close()


class ThreadDecoding:
    """Decoding in a thread of this process, the next video prefetched once the current one is decoded."""

    size = 2

    def __init__(self, stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S) -> None:
        self.stall_timeout_s = stall_timeout_s

    def open(self, job: VideoJob, after: SnippetSource | None = None) -> SnippetSource:
        return SnippetSource(job, after=after, stall_timeout_s=self.stall_timeout_s)

    def __enter__(self) -> "ThreadDecoding":
        return self

    def __exit__(self, *exc) -> None:
        pass


def _check_unique(videos: list[tuple[str, Path]]) -> None:
    seen: dict[str, Path] = {}
    for vid, path in videos:
        if vid in seen:
            raise ExtractionError(f"two videos share the id {vid!r} ({seen[vid]} and {path}); "
                                  "video ids are file names without suffix and must be unique")
        seen[vid] = path


def _remove_partial_files(out: Path) -> None:
    """Temporary files (features, merged manifest) left by a run that was killed while writing."""
    mf.remove_partial_files(out, mf.MANIFEST_NAME)
    for folder in (p for p in (out / "features").glob("*") if p.is_dir()):
        mf.remove_partial_files(folder)


def run(config: RunConfig, ranks: Ranks | None = None, stop: StopSignals | None = None) -> Summary:
    """Extract every video of ``config``; with ``stop``, a SIGINT / SIGTERM ends the run between
    network batches (``Summary.stopped_by``), leaving it resumable."""
    return Runner(config, ranks, stop).run()
