"""Results files (ActivityNet results schema) and the arrays both evaluation protocols read.

``{"version", "results": {video_id: [{"label": str, "score": float, "segment": [s, e]}]},
"external_data": {}}``; clipae's own unsupervised runs add the raw ``"cluster"`` to each entry.

:func:`build_inputs` checks a results object against one subset of the ground truth and turns
both into flat arrays (:class:`EvalInputs`). Bad input is a :class:`ResultsError` (one line):

- no ``results`` at all, or none left to score;
- a score that is not a finite number (NaN, inf, a string);
- a segment that is not two finite numbers with ``start < end``;
- a label that the ground-truth file does not know.

Documented handling, agreeing with the official ActivityNet evaluator:

- a label the file knows but the evaluated subset has no instance of cannot change any class's
  AP (classes come from the subset's ground truth); such predictions are left out and counted in
  :attr:`EvalInputs.notes`;
- video ids are matched with and without the ``v_`` prefix, and the number of predicted videos
  matched that way is one note; ``strict_ids=True`` matches ids exactly, as both official
  evaluators do (an id that differs is then a video outside the subset);
- a video outside the subset is an error by default (a wrong ``--subset``, or ids of another
  dataset); ``unknown_videos="false-positive"`` keeps its predictions as false positives, which is
  what the official evaluators do, and ``"ignore"`` leaves them out.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import BadInput
from ..core.fsio import write_json_atomic
from ..datasets.annotations import GroundTruth, canonical_id

UNKNOWN_VIDEO_POLICIES = ("error", "false-positive", "ignore")


class ResultsError(BadInput, ValueError):
    """A results file that cannot be scored (one line)."""


@dataclass
class EvalInputs:
    """Ground truth of one subset and the predictions to score, as flat arrays.

    Rows keep file order (the official evaluators break ties by it).
    classes:       (C,) evaluated class names: those with at least one instance in the subset
    videos:        (V,) video ids: the subset's, then any extra ones kept as false positives
    gt_video:      (G,) int index into ``videos``;  gt_class (G,) int;  gt_segments (G, 2) seconds
    pred_video:    (P,) int;  pred_class (P,) int;  pred_segments (P, 2);  pred_score (P,) float64
    amb_video:     (A,) int;  amb_segments (A, 2): THUMOS14 ``Ambiguous`` segments
    """

    classes: list[str]
    videos: list[str]
    gt_video: np.ndarray
    gt_class: np.ndarray
    gt_segments: np.ndarray
    pred_video: np.ndarray
    pred_class: np.ndarray
    pred_segments: np.ndarray
    pred_score: np.ndarray
    amb_video: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    amb_segments: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    notes: list[str] = field(default_factory=list)

    @property
    def num_gt_per_class(self) -> np.ndarray:
        return np.bincount(self.gt_class, minlength=len(self.classes))


def read_results(path: str | os.PathLike) -> dict:
    """The ``results`` mapping of a results json (``{video_id: [entry, ...]}``)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("results"), dict):
        raise ResultsError(f"{path}: not an ActivityNet results file (no 'results' object)")
    return obj["results"]


def write_results(path: str | os.PathLike, results: dict[str, list[dict]], version: str = "") -> None:
    """Write ``results`` in the ActivityNet results schema (atomically)."""
    write_json_atomic(path, {"version": version, "results": results, "external_data": {}})


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ResultsError(f"{what} is {value!r}, not a number")
    value = float(value)
    if not math.isfinite(value):
        raise ResultsError(f"{what} is {value}, not a finite number")
    return value


def _entry(video: str, i: int, entry) -> tuple[str, float, float, float]:
    where = f"prediction {i} of video {video!r}"
    if not isinstance(entry, dict) or not {"label", "score", "segment"} <= entry.keys():
        raise ResultsError(f"{where} needs 'label', 'score' and 'segment'")
    seg = entry["segment"]
    if not isinstance(seg, (list, tuple)) or len(seg) != 2:
        raise ResultsError(f"{where}: segment {seg!r} is not [start, end]")
    start, end = _number(seg[0], f"{where}: start"), _number(seg[1], f"{where}: end")
    if not start < end:
        raise ResultsError(f"{where}: segment [{start}, {end}] does not have start < end")
    return str(entry["label"]), _number(entry["score"], f"{where}: score"), start, end


def _flatten(results: dict) -> tuple[list, list, list, list, list, list]:
    """Per prediction, in file order: video, label, score, start, end; and the entry counts per video.
    Structure is checked here, values by :func:`_check_values` (fast path), and the precise
    message of a bad entry comes from :func:`_entry`."""
    videos, labels, scores, starts, ends, counts = [], [], [], [], [], []
    for video, entries in results.items():
        if not isinstance(entries, list):
            raise ResultsError(f"results of video {video!r} are not a list")
        try:
            for e in entries:
                start, end = e["segment"]
                labels.append(e["label"])
                scores.append(e["score"])
                starts.append(start)
                ends.append(end)
        except (KeyError, TypeError, ValueError):
            for i, e in enumerate(entries):
                _entry(video, i, e)
            raise
        videos.append(video)
        counts.append(len(entries))
    return videos, labels, scores, starts, ends, counts


def _check_values(videos, counts, results, scores, starts, ends) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    def numeric(t: type) -> bool:  # what _number accepts
        return issubclass(t, (int, float)) and t is not bool

    if all(numeric(t) for t in set(map(type, scores)) | set(map(type, starts)) | set(map(type, ends))):
        sc, st, en = (np.array(x, dtype=np.float64) for x in (scores, starts, ends))
        bad = ~(np.isfinite(sc) & np.isfinite(st) & np.isfinite(en) & (st < en))
        if not bad.any():
            return sc, st, en
        first_bad = int(np.argmax(bad))
    else:
        first_bad = next(i for i, (a, b, c) in enumerate(zip(scores, starts, ends))
                         if not (numeric(type(a)) and numeric(type(b)) and numeric(type(c))))
    v = int(np.searchsorted(np.cumsum(counts), first_bad, side="right"))
    i = first_bad - (int(np.sum(counts[:v])) if v else 0)
    _entry(videos[v], i, results[videos[v]][i])
    raise AssertionError("unreachable: _entry accepted a value the fast check refused")


def build_inputs(gt: GroundTruth, subset: str | None, results: dict,
                 unknown_videos: str = "error", strict_ids: bool = False) -> EvalInputs:
    """Check ``results`` against ``gt.subset(subset)`` and flatten both (see the module docstring)."""
    if unknown_videos not in UNKNOWN_VIDEO_POLICIES:
        raise ValueError(f"unknown_videos must be one of {UNKNOWN_VIDEO_POLICIES}")
    part = gt.subset(subset)
    classes = sorted({a["label"] for v in part.database.values() for a in v["annotations"]})
    if not classes:
        raise ResultsError(f"subset {subset!r} has no ground-truth instance to score against")
    cidx = {c: i for i, c in enumerate(classes)}
    videos = list(part.database)
    vidx = {v: i for i, v in enumerate(videos)}
    gt_rows = [(vidx[vid], cidx[a["label"]], *a["segment"])
               for vid, v in part.database.items() for a in v["annotations"]]
    amb_rows = [(vidx[vid], s, e) for vid, segs in part.ambiguous.items() for s, e in segs]

    if not results or not any(results.values()):
        raise ResultsError("the results file has no predictions")
    pred_videos, labels, scores, starts, ends, counts = _flatten(results)
    score, start, end = _check_values(pred_videos, counts, results, scores, starts, ends)
    bad = next((label for label in labels if type(label) is not str), None)
    if bad is None:
        bad = next(iter(sorted(set(labels) - set(gt.classes))), None)
    if bad is not None:
        raise ResultsError(f"label {bad!r} is not a class of the ground truth")

    notes: list[str] = []
    outside, remapped = [], []
    subset_ids = dict(vidx)
    video_col = np.empty(len(pred_videos), dtype=np.int64)
    for n, video in enumerate(pred_videos):
        key = (video if video in subset_ids else None) if strict_ids else canonical_id(video, subset_ids)
        if key is not None and key != video and counts[n]:
            remapped.append((video, key))
        if key is None and counts[n]:
            outside.append(video)
            key = video
            if unknown_videos == "false-positive":
                vidx[key] = len(videos)
                videos.append(key)
        video_col[n] = vidx.get(key, -1)
    if outside:
        example = ", ".join(repr(v) for v in outside[:3])
        near = sum(canonical_id(v, subset_ids) is not None for v in outside) if strict_ids else 0
        hint = f"; {near} of them differ from a ground-truth id only by the 'v_' prefix" if near else ""
        if unknown_videos == "error":
            raise ResultsError(
                f"{len(outside)} predicted videos are not in {f'subset {subset!r} of ' if subset else ''}the ground "
                f"truth (e.g. {example}){hint}; check --subset, or pass --unknown-videos false-positive (the "
                f"official evaluators' behaviour) or --unknown-videos ignore")
        notes.append(f"{len(outside)} videos outside the subset ({example}) "
                     + ("left out" if unknown_videos == "ignore" else "scored as false positives") + hint)
    pred_video = np.repeat(video_col, counts)
    pred_class = np.array([cidx.get(label, -1) for label in labels], dtype=np.int64)
    absent = (pred_class < 0) & (pred_video >= 0)
    if absent.any():
        names = sorted({labels[i] for i in np.flatnonzero(absent)})
        notes.append(f"{int(absent.sum())} predictions of classes absent from the subset left out ({', '.join(names)})")
    if remapped:
        example = ", ".join(f"{a!r} as {b!r}" for a, b in remapped[:2])
        notes.append(f"{len(remapped)} predicted video ids matched the ground truth only with or without the 'v_' "
                     f"prefix (e.g. {example}); --strict-ids matches ids exactly, as the official evaluators do")
    keep = (pred_class >= 0) & (pred_video >= 0)
    if not keep.any():
        raise ResultsError("no prediction left to score")

    def cols(table, n):
        return [np.array(c, dtype=np.float64) for c in zip(*table)] if table else [np.zeros(0)] * n

    gv, gc, gs, ge = cols(gt_rows, 4)
    av, as_, ae = cols(amb_rows, 3)
    return EvalInputs(
        classes=classes, videos=videos,
        gt_video=gv.astype(np.int64), gt_class=gc.astype(np.int64), gt_segments=np.stack([gs, ge], 1),
        pred_video=pred_video[keep], pred_class=pred_class[keep],
        pred_segments=np.stack([start[keep], end[keep]], 1), pred_score=score[keep],
        amb_video=av.astype(np.int64), amb_segments=np.stack([as_, ae], 1).reshape(-1, 2),
        notes=notes)
