"""``clipae-compare-features OURS THEIRS``: how close our features are to a public feature set.

OURS and THEIRS are each one of

- an extraction folder or its ``manifest.jsonl``: per video, the ``--streams`` concatenated in
  that order (default ``i3d_rgb,i3d_flow``, the public two-stream layout); its snippet grid is
  read from the manifest;
- a folder of per-video ``<video>.npy`` arrays ``(T, dim)``, or of ``rgb/`` and ``flow/``
  sub-folders with one ``<video>.npy`` each (BaS-Net / CoLA layout; concatenated RGB first);
- one ``.npy`` object array of ``(T, dim)`` arrays (W-TALC's joint features), whose video names
  are ``videoname.npy`` of ``--names DIR`` (default: the array's folder).

Videos are matched by id (``v_`` prefix tolerated). For each, the best temporal alignment of
their rows onto ours is searched: their row ``j`` is compared with our rows interpolated at
``p = step * j + offset``, for every ``step`` (our rows per their row: 1, the ratio of the row
counts, and the row period of every ``--preset``) and every ``offset`` within ``--max-offset``
of our rows. The correlation that picks them is the mean cosine of rows centred on our mean
(raw I3D rows are all positive and alike), on a fixed random projection to
:data:`SEARCH_DIM` dims for wider rows; the reported cosine is the plain per-row cosine after
alignment. A one-line verdict says what differs; the summary covers the dataset, and the exit
status is 1 when any video disagrees: mean cosine below ``--threshold``, a step or offset other
than the identity, or row counts further apart than ``--max-row-difference``.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import BadInput
from ..core.grid import SnippetGrid
from ..core.safe_npy import UnsafeFileError, load_npy
from ..pipeline import manifest as mf
from ..pipeline.presets import PRESETS
from .annotations import canonical_id

PROG = "clipae-compare-features"
DEFAULT_STREAMS = ("i3d_rgb", "i3d_flow")
#: wider rows are randomly projected to this many dims for the alignment search only
SEARCH_DIM = 256


class CompareError(BadInput, ValueError):
    """Inputs that cannot be compared (one line)."""


# --------------------------------------------------------------------------- reading

def load_object_array(path: Path) -> np.ndarray:
    """A ``.npy`` object array (W-TALC's joint features, ``videoname.npy``), read through the
    restricted unpickler of :mod:`clipae.core.safe_npy` (arrays, strings and numbers only)."""
    try:
        return load_npy(path, encoding="bytes")
    except (OSError, ValueError, UnsafeFileError) as e:
        raise CompareError(f"cannot read {path} as a .npy array ({e})") from None


def _name(x) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


@dataclass
class FeatureSet:
    """Per-video ``(T, dim)`` float arrays (loaded on demand) and, when known, the snippet grid."""

    label: str
    paths: dict[str, object]            # video id -> a path, a (path, path) pair, or an array
    grid: SnippetGrid | None = None

    def rows(self, video_id: str) -> np.ndarray:
        src = self.paths[video_id]
        if isinstance(src, np.ndarray):
            parts = [src]
        else:
            parts = [np.load(p, allow_pickle=False) for p in (src if isinstance(src, tuple) else (src,))]
        parts = [np.asarray(p, dtype=np.float32) for p in parts]
        parts = [p.mean(axis=1) if p.ndim == 3 else p for p in parts]  # kept crops: their mean
        if any(p.ndim != 2 for p in parts) or len({len(p) for p in parts}) != 1:
            raise CompareError(f"{self.label}: video {video_id} is not (T, dim) rows: {[p.shape for p in parts]}")
        return np.concatenate(parts, axis=1)


def open_features(spec: str | Path, streams: list[str], names: Path | None = None) -> FeatureSet:
    """A :class:`FeatureSet` from any of the layouts in the module docstring."""
    path = Path(spec)
    manifest = path / mf.MANIFEST_NAME if path.is_dir() else path
    if manifest.name.endswith(".jsonl") and manifest.is_file():
        return _from_manifest(manifest, streams)
    if path.is_file() and path.suffix == ".npy":
        return _from_joint(path, names or path.parent)
    if path.is_dir():
        if (path / "rgb").is_dir() and (path / "flow").is_dir():
            rgb = {p.stem: p for p in (path / "rgb").glob("*.npy")}
            flow = {p.stem: p for p in (path / "flow").glob("*.npy")}
            return FeatureSet(str(path), {v: (rgb[v], flow[v]) for v in sorted(set(rgb) & set(flow))})
        files = {p.stem: p for p in sorted(path.glob("*.npy"))}
        if files:
            return FeatureSet(str(path), files)
        raise CompareError(f"{path}: no manifest.jsonl, no .npy files, no rgb/ and flow/ folders")
    raise CompareError(f"{path}: no such file or folder")


def _from_manifest(manifest: Path, streams: list[str]) -> FeatureSet:
    records = {v: r for v, r in mf.read_manifest(manifest).items() if r.get("status") == "ok"}
    if not records:
        raise CompareError(f"{manifest}: no video with status 'ok'")
    paths, grids = {}, set()
    for vid, rec in records.items():
        missing = [s for s in streams if s not in rec.get("streams", {})]
        if missing:
            raise CompareError(f"{manifest}: video {vid} has no {', '.join(missing)} stream (--streams)")
        paths[vid] = tuple(mf.stream_path(manifest, rec, s) for s in streams)
        grids.add(SnippetGrid.from_record(rec))
    return FeatureSet(str(manifest), paths, grids.pop() if len(grids) == 1 else None)


def _from_joint(path: Path, names_dir: Path) -> FeatureSet:
    names_file = names_dir / "videoname.npy"
    if not names_file.is_file():
        raise CompareError(f"{path} is a joint array: its video names must be in videoname.npy "
                           f"(--names DIR; {names_dir} has none)")
    names = [_name(n) for n in load_object_array(names_file)]
    arrays = load_object_array(path)
    if arrays.ndim != 1 or len(arrays) != len(names):
        raise CompareError(f"{path} holds {arrays.shape} entries but {names_file} names {len(names)} videos")
    return FeatureSet(str(path), {n: np.asarray(a) for n, a in zip(names, arrays)})


# --------------------------------------------------------------------------- alignment

@dataclass
class Alignment:
    step: float          # our rows per their row
    offset: float        # our row their row 0 falls on
    score: float         # mean cosine of centred rows over the overlap (what the search maximises)
    cosine: np.ndarray   # (overlap,) plain cosine per aligned row
    overlap: int         # their rows compared


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _interpolate(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Rows of ``x (T, d)`` linearly interpolated at positions ``p (n,)`` in ``[0, T-1]``."""
    lo = np.clip(np.floor(p).astype(np.int64), 0, len(x) - 1)
    hi = np.minimum(lo + 1, len(x) - 1)
    w = (p - lo)[:, None]
    return x[lo] * (1 - w) + x[hi] * w


def candidate_steps(ours_rows: int, theirs_rows: int, grid: SnippetGrid | None) -> list[float]:
    """1, every preset's row period over ours, and the row-count ratio (deduplicated within 1 %,
    the exact periods first)."""
    steps = [1.0]
    if grid is not None:
        ours_s = grid.stride / grid.fps
        steps += [p.options["snippet_stride"] / p.options["fps"] / ours_s for p in PRESETS.values()]
    steps.append(ours_rows / max(theirs_rows, 1))
    out: list[float] = []
    for s in steps:
        if s > 0 and all(abs(s - t) > 0.01 * t for t in out):
            out.append(s)
    return out


def align(ours: np.ndarray, theirs: np.ndarray, steps: list[float], max_offset: float = 3.0,
          min_overlap: float = 0.5) -> Alignment:
    """The ``(step, offset)`` whose aligned rows correlate best (see the module docstring).

    ours (Ta, d), theirs (Tb, d) float; offsets run over ``[-max_offset, max_offset]`` our rows in
    quarters of ``min(step, 1)``; an alignment must compare at least ``min_overlap`` of the rows
    the shorter side can cover.
    """
    mean = ours.mean(axis=0)
    ours_c, theirs_c = ours - mean, theirs - mean
    if ours.shape[1] > SEARCH_DIM:  # the search on a fixed random projection (cosines kept within a few %)
        proj = np.random.default_rng(0).normal(size=(ours.shape[1], SEARCH_DIM)).astype(np.float32)
        ours_c, theirs_c = ours_c @ proj, theirs_c @ proj
    ours_c, theirs_c = _unit(ours_c), _unit(theirs_c)
    ours_u, theirs_u = _unit(ours), _unit(theirs)
    best: Alignment | None = None
    j = np.arange(len(theirs), dtype=np.float64)
    for step in steps:
        resolution = 0.25 * min(step, 1.0)
        need = max(1, int(min_overlap * min(len(theirs), (len(ours) - 1) / step + 1)))
        for offset in np.arange(-max_offset, max_offset + 1e-9, resolution):
            p = step * j + offset
            inside = (p >= -1e-9) & (p <= len(ours) - 1 + 1e-9)
            if inside.sum() < need:
                continue
            pos = np.clip(p[inside], 0, len(ours) - 1)
            score = float(np.mean(np.sum(_unit(_interpolate(ours_c, pos)) * theirs_c[inside], axis=1)))
            if best is None or score > best.score + 1e-9:
                cosine = np.sum(_unit(_interpolate(ours_u, pos)) * theirs_u[inside], axis=1)
                best = Alignment(float(step), float(round(offset, 6)), score, cosine, int(inside.sum()))
    if best is None:
        raise CompareError(f"no alignment overlaps enough rows (ours {len(ours)}, theirs {len(theirs)})")
    return best


# --------------------------------------------------------------------------- verdicts

@dataclass
class VideoReport:
    video_id: str
    ours_rows: int
    theirs_rows: int
    step: float | None = None
    offset: float | None = None
    mean_cosine: float | None = None
    min_cosine: float | None = None
    agree: bool = False
    verdict: str = ""

    def line(self) -> str:
        head = f"{self.video_id}: ours {self.ours_rows} rows, theirs {self.theirs_rows}"
        if self.step is not None:
            head += (f"; step {self.step:.4g}, offset {self.offset:+.3g}; cosine mean {self.mean_cosine:.3f}"
                     f" min {self.min_cosine:.3f}")
        return f"{head}: {self.verdict}"


@dataclass
class Thresholds:
    cosine: float = 0.95
    max_row_difference: int = 1
    max_offset: float = 3.0


def _preset_for_period(seconds: float) -> str | None:
    for p in PRESETS.values():
        if abs(p.options["snippet_stride"] / p.options["fps"] - seconds) <= 0.01 * seconds:
            return p.name
    return None


def compare_video(video_id: str, ours: np.ndarray, theirs: np.ndarray, grid: SnippetGrid | None,
                  limits: Thresholds) -> VideoReport:
    report = VideoReport(video_id, len(ours), len(theirs))
    if ours.shape[1] != theirs.shape[1]:
        report.verdict = f"dims differ: ours {ours.shape[1]}, theirs {theirs.shape[1]} (check --streams)"
        return report
    a = align(ours, theirs, candidate_steps(len(ours), len(theirs), grid), limits.max_offset)
    report.step, report.offset = a.step, a.offset
    report.mean_cosine, report.min_cosine = float(a.cosine.mean()), float(a.cosine.min())
    identity = abs(a.step - 1.0) < 1e-6
    if not identity:
        period = f"{a.step:.4g} of our rows per row"
        if grid is not None:
            seconds = a.step * grid.stride / grid.fps
            preset = _preset_for_period(seconds)
            matches = [p for p in PRESETS.values() if p.name == preset]
            if matches:
                o = matches[0].options
                report.verdict = (f"theirs are at {o['fps']:g} fps stride {o['snippet_stride']} "
                                  f"({seconds:.4g} s per row): use --preset {preset}")
                return report
            period = f"{seconds:.4g} s per row"
        report.verdict = (f"theirs are on another grid ({period}, ours {'?' if grid is None else f'{grid.stride / grid.fps:.4g}'}"
                          f" s): set --fps and --snippet-stride to match")
        return report
    extra = len(theirs) - len(ours)
    rows_note = ""
    if extra:
        rows_note = f"; theirs have {extra:+d} rows" + (" (the last partial snippet dropped)" if extra == -1 and a.offset == 0 else "")
    if a.offset != 0:
        report.verdict = (f"rows are shifted: their row 0 is our row {a.offset:+.3g} (mean cosine "
                          f"{report.mean_cosine:.3f}){rows_note}; check the first frame and the resampling")
        return report
    if report.mean_cosine < limits.cosine:
        report.verdict = (f"rows align with offset 0 but mean cosine {report.mean_cosine:.3f} < {limits.cosine:g}: "
                          f"the features differ (weights, resize, crops, flow){rows_note}")
        return report
    report.agree = abs(extra) <= limits.max_row_difference
    report.verdict = f"rows match with offset 0, mean cosine {report.mean_cosine:.3f}{rows_note}"
    if not report.agree:
        report.verdict += f" (more than {limits.max_row_difference} rows apart)"
    return report


@dataclass
class Comparison:
    videos: list[VideoReport] = field(default_factory=list)
    only_ours: list[str] = field(default_factory=list)
    only_theirs: list[str] = field(default_factory=list)

    @property
    def agree(self) -> bool:
        return bool(self.videos) and all(v.agree for v in self.videos)

    def summary(self) -> str:
        n, ok = len(self.videos), sum(v.agree for v in self.videos)
        cos = [v.mean_cosine for v in self.videos if v.mean_cosine is not None]
        text = f"{n} videos compared: {ok} agree, {n - ok} disagree"
        if cos:
            worst = min((v for v in self.videos if v.mean_cosine is not None), key=lambda v: v.mean_cosine)
            text += f"; mean cosine {np.mean(cos):.3f} (worst {worst.video_id}: {worst.mean_cosine:.3f})"
        if self.only_ours or self.only_theirs:
            text += f"; {len(self.only_ours)} only in ours, {len(self.only_theirs)} only in theirs"
        return text

    def to_json(self) -> dict:
        return {"videos": [asdict(v) for v in self.videos], "only_ours": self.only_ours,
                "only_theirs": self.only_theirs, "agree": self.agree, "summary": self.summary()}


def compare(ours: FeatureSet, theirs: FeatureSet, limits: Thresholds = Thresholds()) -> Comparison:
    """Every video of both sets, matched by id."""
    out = Comparison()
    matched = {}
    for vid in ours.paths:
        key = canonical_id(vid, theirs.paths)
        if key is None:
            out.only_ours.append(vid)
        else:
            matched[vid] = key
    out.only_theirs = sorted(set(theirs.paths) - set(matched.values()))
    for vid, key in matched.items():
        out.videos.append(compare_video(vid, ours.rows(vid), theirs.rows(key), ours.grid, limits))
    return out


# --------------------------------------------------------------------------- command

def _grid(text: str) -> SnippetGrid:
    try:
        fps, length, stride = text.split(",")
        return SnippetGrid(float(fps), int(length), int(stride))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FPS,LENGTH,STRIDE, not {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Compare our features with a public feature set: row "
                                "counts, temporal alignment, cosine per row, and a verdict per video.")
    p.add_argument("ours", help="extraction folder or manifest.jsonl, a folder of <video>.npy, or a joint .npy")
    p.add_argument("theirs", help="the same kinds as OURS (W-TALC joint arrays need --names)")
    p.add_argument("--streams", default=",".join(DEFAULT_STREAMS),
                   help="streams of a manifest, concatenated in this order (default: %(default)s)")
    p.add_argument("--names", type=Path, help="folder of videoname.npy for a joint .npy (default: its folder)")
    p.add_argument("--grid", type=_grid, metavar="FPS,LENGTH,STRIDE",
                   help="our snippet grid when OURS is not a manifest (default 25,16,16)")
    p.add_argument("--threshold", type=float, default=Thresholds.cosine,
                   help="a video agrees when its mean cosine is at least this (default: %(default)s)")
    p.add_argument("--max-row-difference", type=int, default=Thresholds.max_row_difference,
                   help="row counts may differ by this much (default: %(default)s)")
    p.add_argument("--max-offset", type=float, default=Thresholds.max_offset,
                   help="offsets searched, in our rows (default: %(default)s)")
    p.add_argument("--json", type=Path, help="write the per-video reports and the summary here")
    p.add_argument("--quiet", action="store_true", help="only the summary")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    streams = [s.strip() for s in args.streams.split(",") if s.strip()]
    ours = open_features(args.ours, streams, args.names)
    theirs = open_features(args.theirs, streams, args.names)
    if ours.grid is None:
        ours.grid = args.grid or SnippetGrid()
    result = compare(ours, theirs, Thresholds(args.threshold, args.max_row_difference, args.max_offset))
    if not result.videos:
        raise CompareError(f"no video is in both ({len(ours.paths)} in ours, {len(theirs.paths)} in theirs)")
    if not args.quiet:
        for v in result.videos:
            print(v.line())
    print(result.summary())
    if args.json:
        args.json.write_text(json.dumps(result.to_json(), indent=1), encoding="utf-8")
    return 0 if result.agree else 1
