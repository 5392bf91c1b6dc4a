"""``clipae-import-features``: the public two-stream I3D features into a clipae manifest.

Most papers on THUMOS14 and ActivityNet v1.2 start from the same public I3D features (25 fps,
non-overlapping 16-frame snippets, RGB and TV-L1 flow, 1024 + 1024 dims). Two layouts are read:

``wtalc``
    One object array ``(N,)`` of ``(T, 2048)`` float arrays (W-TALC, CO2-Net, DELU:
    ``Thumos14reduced-I3D-JOINTFeatures.npy``). Columns ``0:1024`` are RGB and ``1024:2048`` flow:
    DELU's ``wsad_dataset.py`` takes ``feat[..., :1024]`` for its ``rgb`` mode and
    ``feat[..., 1024:]`` for ``flow``. Row ``i`` belongs to the ``i``-th name of
    ``videoname.npy`` in the annotation folder, whose ``duration.npy`` gives the durations.
``rgb-flow``
    One file per video and stream, ``<features>/**/rgb/<video>.npy`` and the same name under
    the sibling ``flow/`` folder (CoLA, BaS-Net, UM: ``features/{train,test}/{rgb,flow}/``).
    Durations come from ``--annotations`` (a W-TALC annotation folder, or any json in the
    ActivityNet schema with ``duration``, such as ActionFormer's) or from the videos themselves.

Each video lands as ``features/i3d_rgb/<video>.npy`` and ``features/i3d_flow/<video>.npy`` with
one manifest line (DESIGN.md) whose weights are ``"imported"``. Its rows are checked against the
snippet grid (``--fps``, ``--snippet-length``, ``--snippet-stride``, by default the public
features' 25 / 16 / 16): ``num_snippets`` follows from the duration as for extracted videos. A
video whose rows differ is reported and recorded as failed; ``--adjust-rows N`` pads (repeating
the last row) or trims videos off by at most ``N`` rows instead, and records that it did.

With ``--videos DIR`` the durations are read from the video files (those extraction will decode)
and each video is recorded under its file's stem, the ``video_id`` extraction gives it (``v_<id>``
for ActivityNet files; features named ``<id>`` are matched with and without ``v_``). Afterwards
``clipae-extract DIR OUT --streams clip,vggish`` adds the other streams on the same grid to the
same manifest.

The W-TALC object arrays are read with :func:`clipae.core.safe_npy.load_npy`: arrays, strings
and numbers only, so a crafted file runs no code.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..core.errors import BadInput
from ..core.fsio import sha256_of, video_files
from ..core.grid import SnippetGrid
from ..core.registry import Registry
from ..core.safe_npy import load_npy
from ..pipeline import manifest as mf
from .annotations import AnnotationError, canonical_id, load_ground_truth

STREAM_DIM = 1024
STREAMS = ("i3d_rgb", "i3d_flow")


class FeatureImportError(BadInput, RuntimeError):
    """The import cannot start (one line, no traceback)."""


@dataclass
class VideoFeatures:
    """One video as a layout reads it.

    arrays:   ``{"i3d_rgb": (T, 1024), "i3d_flow": (T, 1024)}``
    settings: per stream, where its rows came from (recorded in the manifest)
    problem:  why the video cannot be imported (a missing or unreadable file), else ``None``
    """

    video_id: str
    arrays: dict[str, np.ndarray]
    settings: dict[str, dict]
    problem: str | None = None


@dataclass
class VideoInfo:
    """What the manifest records about the source video (``None`` where unknown)."""

    duration_s: float
    native_fps: float | None = None
    num_frames: int | None = None
    source: str | None = None


# --------------------------------------------------------------------------------------------
# Layouts: each yields VideoFeatures.

def _str(x) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def _load(path: Path) -> np.ndarray:
    """A W-TALC ``.npy`` file (arrays, strings and numbers only), or one :class:`FeatureImportError` line."""
    try:
        return load_npy(path)
    except (OSError, ValueError) as e:  # UnsafeFileError included
        raise FeatureImportError(f"cannot read {path} ({e})") from None


def read_wtalc_index(folder: Path) -> tuple[list[str], dict[str, VideoInfo]]:
    """Video names (in feature order) and durations from a W-TALC annotation folder."""
    names_file, dur_file = folder / "videoname.npy", folder / "duration.npy"
    if not names_file.is_file():
        raise FeatureImportError(f"{folder} is not a W-TALC annotation folder (no videoname.npy)")
    names = [_str(n) for n in _load(names_file)]
    infos: dict[str, VideoInfo] = {}
    if dur_file.is_file():
        durations = np.asarray(_load(dur_file), dtype=np.float64).reshape(-1)
        fps_file = folder / "original_fps.npy"
        fps = np.asarray(_load(fps_file), dtype=np.float64).reshape(-1) if fps_file.is_file() else None
        if len(durations) != len(names) or (fps is not None and len(fps) != len(names)):
            raise FeatureImportError(f"{folder}: videoname.npy has {len(names)} entries but duration.npy "
                                     f"{len(durations)}" + ("" if fps is None else f" and original_fps.npy {len(fps)}"))
        for i, name in enumerate(names):
            native = None if fps is None else float(fps[i])
            infos[name] = VideoInfo(float(durations[i]), native,
                                    None if native is None else int(round(durations[i] * native)))
    return names, infos


def wtalc_fps_note(folder: Path, grid: SnippetGrid) -> str | None:
    """A note when the folder's ``extracted_fps.npy`` disagrees with the grid's fps.

    The THUMOS14 folder says 10 fps for every video: that file describes W-TALC's UntrimmedNet
    features (its evaluation converts them with 10 / 4); the I3D features are converted with
    25 / 16, which is what the row check tests.
    """
    path = folder / "extracted_fps.npy"
    if not path.is_file():
        return None
    fps = np.asarray(_load(path), dtype=np.float64).reshape(-1)
    differ = int(np.sum(np.abs(fps - grid.fps) > 1e-6))
    if not differ:
        return None
    return (f"note: {path} gives {', '.join(f'{v:g}' for v in np.unique(fps))} fps for {differ} of {len(fps)} videos; "
            f"W-TALC's I3D features use 25 fps and 16-frame snippets (that file describes its UntrimmedNet "
            f"features), so rows are checked on the grid of --fps {grid.fps:g}")


def read_wtalc(path: Path, annotations: Path | None) -> Iterator[VideoFeatures]:
    """The W-TALC joint array: ``(N,)`` objects of ``(T, 2048)``, RGB columns first."""
    if annotations is None:
        raise FeatureImportError("the wtalc layout needs --annotations: the W-TALC annotation folder "
                                 "whose videoname.npy names the rows")
    names, _ = read_wtalc_index(annotations)
    try:
        feats = load_npy(path, encoding="bytes")
    except (OSError, ValueError) as e:  # UnsafeFileError included
        raise FeatureImportError(f"cannot read {path} as a .npy array ({e})") from None
    if feats.ndim != 1 or len(feats) != len(names):
        raise FeatureImportError(f"{path} holds {feats.shape} entries but {annotations}/videoname.npy names "
                                 f"{len(names)} videos; they must match one to one")
    digest = sha256_of(path)
    for name, joint in zip(names, feats):
        joint = np.asarray(joint)
        if joint.ndim != 2 or joint.shape[1] != 2 * STREAM_DIM:
            raise FeatureImportError(f"{path}: video {name} has shape {joint.shape}, expected (T, {2 * STREAM_DIM})")
        columns = {"i3d_rgb": (0, STREAM_DIM), "i3d_flow": (STREAM_DIM, 2 * STREAM_DIM)}
        yield VideoFeatures(name, {k: joint[:, a:b] for k, (a, b) in columns.items()},
                            {k: {"source": "imported wtalc", "file": path.name, "sha256": digest, "columns": [a, b]}
                             for k, (a, b) in columns.items()})


def read_rgb_flow(path: Path, annotations: Path | None) -> Iterator[VideoFeatures]:
    """Per-video ``rgb/<video>.npy`` and ``flow/<video>.npy`` files anywhere under ``path``."""
    rgb_dirs = sorted(d for d in [path, *path.rglob("*")] if d.is_dir() and d.name == "rgb")
    if not rgb_dirs:
        raise FeatureImportError(f"no rgb/ folder under {path} (expected features/<split>/rgb/<video>.npy)")
    for rgb_dir in rgb_dirs:
        flow_dir = rgb_dir.parent / "flow"
        names = sorted({p.stem for p in rgb_dir.glob("*.npy")} | {p.stem for p in flow_dir.glob("*.npy")})
        for name in names:
            files = {"i3d_rgb": rgb_dir / f"{name}.npy", "i3d_flow": flow_dir / f"{name}.npy"}
            arrays, settings, problems = {}, {}, []
            for stream, f in files.items():
                try:
                    arrays[stream] = np.load(f, allow_pickle=False)
                except (OSError, ValueError) as e:
                    problems.append(f"cannot read {f} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
                    continue
                settings[stream] = {"source": "imported rgb-flow", "file": str(f.relative_to(path)), "sha256": sha256_of(f)}
            yield VideoFeatures(name, arrays, settings, "; ".join(problems) or None)


#: layout name -> reader(features path, annotations path or None)
LAYOUTS: Registry[Callable[[Path, Path | None], Iterator[VideoFeatures]]] = Registry("feature layout")
LAYOUTS.add("wtalc", read_wtalc)
LAYOUTS.add("rgb-flow", read_rgb_flow)


# --------------------------------------------------------------------------------------------
# Durations: from the videos themselves, or from annotation files.

def probe_video(path: Path) -> VideoInfo:
    """Duration, frame rate and frame count of a video file from its container (no decoding)."""
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise FeatureImportError(f"{path} has no video stream")
            v = c.streams.video[0]
            fps = float(v.average_rate) if v.average_rate else None
            if v.duration is not None and v.time_base is not None:
                duration = float(v.duration * v.time_base)
            elif c.duration is not None:
                duration = c.duration / 1e6
            else:
                raise FeatureImportError(f"{path}: its container gives no duration")
            frames = v.frames or (int(round(duration * fps)) if fps else None)
    except av.FFmpegError as e:
        raise FeatureImportError(f"cannot open {path}: {e}") from None
    return VideoInfo(duration, fps, frames, str(path))


def find_videos(folder: Path) -> dict[str, Path]:
    """``{file stem: path}`` of every video file under ``folder``."""
    if not folder.is_dir():
        raise FeatureImportError(f"--videos {folder}: not a folder")
    return {p.stem: p for p in video_files(folder)}


def durations_from_annotations(path: Path) -> dict[str, VideoInfo]:
    """Durations from a W-TALC annotation folder or an ActivityNet-schema json."""
    if path.is_dir():
        return read_wtalc_index(path)[1]
    try:
        gt = load_ground_truth(path)
    except AnnotationError as e:
        raise FeatureImportError(str(e)) from None
    out = {}
    for vid, v in gt.database.items():
        if v.get("duration") is not None:
            fps = v.get("fps")
            out[vid] = VideoInfo(float(v["duration"]), None if fps is None else float(fps),
                                 None if fps is None else int(round(float(v["duration"]) * float(fps))))
    return out


class VideoInfoSource:
    """Looks a video up in ``--videos`` first (the files extraction will decode), then in
    ``--annotations``; ``None`` when neither knows it."""

    def __init__(self, videos: Path | None, annotations: Path | None) -> None:
        self.videos = find_videos(videos) if videos is not None else {}
        self.annotated = durations_from_annotations(annotations) if annotations is not None else {}

    def __call__(self, video_id: str) -> VideoInfo | None:
        key = canonical_id(video_id, self.videos)
        info = probe_video(self.videos[key]) if key is not None else None
        key = canonical_id(video_id, self.annotated)
        if info is None and key is not None:
            info = self.annotated[key]
        return info


# --------------------------------------------------------------------------------------------
# The grid check and the manifest records.

@dataclass
class GridCheck:
    rows: int          # rows in the imported file
    expected: int      # rows our grid gives for the video's duration
    frames: int        # resampled frames at the grid's fps

    @property
    def difference(self) -> int:
        return self.rows - self.expected

    def describe(self, grid: SnippetGrid, duration_s: float) -> str:
        text = (f"{self.rows} rows, the grid expects {self.expected} ({duration_s:.3f} s = {self.frames} frames "
                f"at {grid.fps:g} fps, {grid.length}-frame snippets every {grid.stride})")
        if self.rows == self.frames // grid.stride and self.rows != self.expected:
            text += f"; the rows equal floor(frames / {grid.stride}): the last partial snippet was dropped"
        return text


def check_grid(rows: int, duration_s: float, grid: SnippetGrid) -> GridCheck:
    frames = grid.num_frames(duration_s)
    return GridCheck(rows, grid.num_snippets(frames), frames)


def fit_rows(x: np.ndarray, n: int) -> np.ndarray:
    """``x`` trimmed to ``n`` rows, or padded by repeating its last row."""
    if len(x) >= n:
        return x[:n]
    return np.concatenate([x, np.repeat(x[-1:], n - len(x), axis=0)])


@dataclass
class ImportOptions:
    out: Path
    grid: SnippetGrid
    adjust_rows: int | None = None   # pad / trim videos off by at most this many rows
    overwrite: bool = False


@dataclass
class Outcome:
    video_id: str
    status: str                     # "ok", "adjusted", "unchanged" or "failed"
    message: str = ""
    difference: int | None = None   # imported rows - expected rows, when they were compared


def manifest_id(name: str, info: VideoInfo | None) -> str:
    """The manifest's ``video_id``: the video file's stem when the file is known (as extraction
    names it, e.g. ``v_<id>`` for ActivityNet), else the name the features carry."""
    return Path(info.source).stem if info is not None and info.source else name


def import_video(video: VideoFeatures, info: VideoInfo | None, opts: ImportOptions,
                 existing: dict | None) -> Outcome:
    """Check one video's rows against the grid, write its files and its manifest line."""
    manifest = opts.out / mf.MANIFEST_NAME
    grid = opts.grid
    video_id = manifest_id(video.video_id, info)
    base = {"video_id": video_id, "source": info.source if info else None, **grid.as_dict()}

    def fail(message: str, difference: int | None = None) -> Outcome:
        mf.append_record(manifest, {**base, "status": "failed", "error": message})
        return Outcome(video_id, "failed", message, difference)

    if video.problem:
        return fail(video.problem)
    if info is None:
        return fail("no duration known for this video: pass --videos or --annotations with durations")
    for name, x in video.arrays.items():
        if x.ndim != 2 or x.shape[1] != STREAM_DIM or not np.issubdtype(x.dtype, np.floating) or len(x) == 0:
            return fail(f"{name} features have shape {x.shape} and dtype {x.dtype}, expected (T, {STREAM_DIM}) floats")
    rows = {name: len(x) for name, x in video.arrays.items()}
    if len(set(rows.values())) != 1:
        return fail("the streams differ in rows: " + ", ".join(f"{k} {v}" for k, v in rows.items()))
    check = check_grid(rows["i3d_rgb"], info.duration_s, grid)
    settings = {name: {**video.settings[name], "weights_id": "imported"} for name in STREAMS}
    status = "ok"
    if check.difference:
        if opts.adjust_rows is None or abs(check.difference) > opts.adjust_rows:
            hint = "" if opts.adjust_rows is not None else f"; --adjust-rows {abs(check.difference)} would pad or trim it"
            return fail("grid mismatch: " + check.describe(grid, info.duration_s) + hint, check.difference)
        for name in STREAMS:
            settings[name]["rows_adjusted"] = [check.rows, check.expected]
        status = "adjusted"
    streams = {name: {"path": f"features/{name}/{video_id}.npy", "dim": STREAM_DIM,
                      "dtype": str(video.arrays[name].dtype), "settings": settings[name]}
               for name in STREAMS}
    record = {**base, "status": "ok", "error": None, "duration_s": info.duration_s,
              "native_fps": info.native_fps, "num_frames": info.num_frames,
              "num_snippets": check.expected, "has_audio": None,
              "streams": streams, "weights": {name: "imported" for name in STREAMS}}
    same_grid = (existing is not None and existing.get("status") == "ok"
                 and [existing.get(k) for k in ("fps", "snippet_length", "snippet_stride", "num_snippets")]
                 == [record[k] for k in ("fps", "snippet_length", "snippet_stride", "num_snippets")])
    if same_grid and not opts.overwrite and all(
            existing["streams"].get(n, {}).get("settings") == settings[n] for n in STREAMS):
        return Outcome(video_id, "unchanged", difference=check.difference)
    if same_grid:  # streams added since (clip, vggish) still fit: keep them
        for name, entry in existing["streams"].items():
            if name not in STREAMS:
                record["streams"][name] = entry
                record["weights"][name] = existing.get("weights", {}).get(name)
        record["has_audio"] = existing.get("has_audio")
        if existing.get("source") and not record["source"]:
            record["source"] = existing["source"]
    for name in STREAMS:
        streams[name]["sha256"] = mf.save_array_atomic(opts.out / streams[name]["path"],
                                                       fit_rows(video.arrays[name], check.expected))
    mf.rehash(record, grid)
    mf.append_record(manifest, record)
    return Outcome(video_id, status, check.describe(grid, info.duration_s) if check.difference else "",
                   check.difference)


def run_import(videos: Iterator[VideoFeatures], infos: Callable[[str], VideoInfo | None],
               opts: ImportOptions, progress: bool = False, log: Callable[[str], None] = print) -> list[Outcome]:
    """Import every video; mismatches and failures are logged one line each as they happen."""
    from tqdm import tqdm

    opts.out.mkdir(parents=True, exist_ok=True)
    manifest = opts.out / mf.MANIFEST_NAME
    existing = mf.read_manifest(manifest) if manifest.is_file() else {}
    outcomes = []
    bar = tqdm(videos, desc="import", unit="video", disable=not progress)
    for video in bar:
        info = infos(video.video_id)
        outcome = import_video(video, info, opts, existing.get(manifest_id(video.video_id, info)))
        if outcome.status in ("failed", "adjusted"):
            (bar.write if progress else log)(f"{outcome.video_id}: {outcome.status}: {outcome.message}")
        outcomes.append(outcome)
    return outcomes


def summary(outcomes: list[Outcome], opts: ImportOptions) -> str:
    g = opts.grid
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "adjusted", "unchanged", "failed")}
    off = [o.difference for o in outcomes if o.difference]
    mismatched = sum(1 for o in outcomes if o.status == "failed" and o.difference)
    lines = [f"{len(outcomes)} videos on the grid {g.fps:g} fps, {g.length}-frame snippets every {g.stride} frames "
             f"-> {opts.out / mf.MANIFEST_NAME}",
             f"  rows as the grid expects: {counts['ok']}",
             f"  already imported, unchanged: {counts['unchanged']}",
             f"  rows padded or trimmed (--adjust-rows {'not given' if opts.adjust_rows is None else opts.adjust_rows}): "
             f"{counts['adjusted']}",
             f"  failed: {counts['failed']} (grid mismatch: {mismatched}, other: {counts['failed'] - mismatched})"]
    if off:
        lines.append("  videos by row difference (imported - expected): "
                     + ", ".join(f"{d:+d}: {off.count(d)}" for d in sorted(set(off))))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="clipae-import-features",
                                description="Import public two-stream I3D features into a clipae manifest.")
    p.add_argument("layout", choices=sorted(LAYOUTS),
                   help="wtalc: one object array of (T, 2048), RGB first (W-TALC, CO2-Net, DELU); "
                        "rgb-flow: per-video rgb/ and flow/ .npy files (CoLA, BaS-Net, UM)")
    p.add_argument("features", type=Path, help="the joint .npy file (wtalc) or the features folder (rgb-flow)")
    p.add_argument("out", type=Path, help="output folder: manifest.jsonl and features/ (created or added to)")
    p.add_argument("--annotations", type=Path,
                   help="W-TALC annotation folder (required for wtalc: videoname.npy, duration.npy), or a json "
                        "with durations in the ActivityNet schema")
    p.add_argument("--videos", type=Path,
                   help="folder of the source videos: durations are read from them (preferred) and recorded as source")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate the features were extracted at")
    p.add_argument("--snippet-length", type=int, default=16, help="frames per snippet")
    p.add_argument("--snippet-stride", type=int, default=16, help="frames between snippet starts")
    p.add_argument("--adjust-rows", type=int, metavar="N",
                   help="pad (repeating the last row) or trim videos whose rows are off by at most N; "
                        "without it every mismatch fails")
    p.add_argument("--overwrite", action="store_true", help="import again videos already imported")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.adjust_rows is not None and args.adjust_rows < 0:
        p.error("--adjust-rows must be >= 0")
    try:
        grid = SnippetGrid(args.fps, args.snippet_length, args.snippet_stride)
    except ValueError as e:
        p.error(str(e))
    if not args.features.exists():
        raise FeatureImportError(f"{args.features}: no such file or folder")
    opts = ImportOptions(args.out, grid, args.adjust_rows, args.overwrite)
    infos = VideoInfoSource(args.videos, args.annotations)
    if args.layout == "wtalc" and args.annotations is not None:
        note = wtalc_fps_note(args.annotations, grid)
        if note:
            print(note)
    outcomes = run_import(LAYOUTS[args.layout](args.features, args.annotations), infos, opts,
                          progress=not args.quiet and sys.stderr.isatty())
    print(summary(outcomes, opts))
    return 1 if any(o.status == "failed" for o in outcomes) else 0
