"""A trained run + a manifest → predictions in the ActivityNet results schema.

What this module needs from a run (``clipae.models.run.load_run(run_dir) -> TrainedRun``):

- ``run.predict(features: {stream: (T, dim) array}, has_audio: bool)`` →
  ``{"cas": (T, K), "attention": (T,), "video_scores": (K,)}``, numpy, in [0, 1];
- ``run.extraction``: what the run was trained on, a :class:`~clipae.models.trained_on.TrainedOn`
  (the grid, the streams the model reads, their weights, the training manifest); a manifest
  whose grid or weights differ is refused, since its features would not mean what the model learnt;
- ``run.classes``: the class names; ``run.train_assignments``: ``{video_id: cluster}`` for an
  unsupervised run (columns of ``cas`` are clusters), empty or ``None`` for a weakly-supervised
  one (columns are ``run.classes``);
- ``run.config.proposals``: the run's :class:`~clipae.models.config.ProposalConfig` (``--set
  proposals.*`` at training; a run folder older than it gets the defaults).

For an unsupervised run the cluster → class mapping (:mod:`clipae.eval.mapping`) is read from the
run folder, or built from the training assignments and the ground truth's labels and saved there.
Each proposal keeps its raw ``cluster``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..core.errors import BadInput
from ..core.grid import SnippetGrid
from ..datasets.annotations import GroundTruth, canonical_id
from ..models.trained_on import RunError
from ..pipeline.manifest import load_stream, read_manifest
from .mapping import CLIP_TEXT, MAPPING_FILE, NAMES_FILE, ClusterMapping, MappingError, build_mapping
from .proposals import ProposalConfig, Proposals, generate_proposals


class PredictError(BadInput, ValueError):
    """A run and a manifest that cannot be used together (one line)."""


def load_trained_run(run_dir: str | os.PathLike):
    """:func:`clipae.models.run.load_run`, its refusal one :class:`PredictError` line. The model stage
    (torch, the networks) is imported here, so scoring a results file never loads it."""
    from ..models import run as trained_runs

    try:
        return trained_runs.load_run(run_dir)
    except RunError as e:
        raise PredictError(str(e)) from None


def run_streams(run) -> list[str]:
    """The feature streams the run's model reads."""
    return list(run.extraction.streams)


def check_record(run, record: dict, streams: list[str]) -> None:
    """Refuse a manifest line whose grid, streams or weights differ from the run's."""
    vid = record.get("video_id")
    ours, theirs = run.extraction.grid.as_dict(), SnippetGrid.from_record(record).as_dict()
    for key in ours:
        if ours[key] != theirs[key]:
            raise PredictError(f"video {vid!r}: {key} = {theirs[key]} in the manifest but {ours[key]} in the run")
    missing = [s for s in streams if s not in record.get("streams", {})]
    if missing:
        raise PredictError(f"video {vid!r} has no {', '.join(missing)} features; the run needs {', '.join(streams)}")
    run_w, rec_w = run.extraction.weights, record.get("weights", {})
    for s in streams:
        if s in run_w and s in rec_w and run_w[s] != rec_w[s]:
            raise PredictError(f"video {vid!r}: stream {s} made with weights {rec_w[s]}, the run used {run_w[s]}")


def cluster_mapping(run, run_dir: str | os.PathLike | None, gt: GroundTruth | None,
                    method: str = "hungarian") -> ClusterMapping | None:
    """``None`` for a weakly-supervised run; else the saved mapping, or one built and saved."""
    if not getattr(run, "train_assignments", None):
        return None
    if method == CLIP_TEXT:
        path = Path(run_dir or ".") / NAMES_FILE
        if not path.is_file():
            raise MappingError(f"{path}: no cluster names; train with clipae-train --class-names NAMES")
        return ClusterMapping.load(path)
    path = Path(run_dir) / MAPPING_FILE if run_dir is not None else None
    if path is not None and path.is_file():
        mapping = ClusterMapping.load(path)
        if mapping.method == method:
            return mapping
    if gt is None:
        raise PredictError("an unsupervised run needs its cluster mapping: pass the ground truth "
                           f"(--annotations) once so that {MAPPING_FILE} can be built from the training videos")
    labels = gt.video_labels()
    train_labels = {vid: labels[key] for vid in run.train_assignments
                    if (key := canonical_id(vid, labels)) is not None}
    mapping = build_mapping(dict(run.train_assignments), train_labels, len(run.classes), list(gt.classes), method)
    if path is not None:
        mapping.save(path)
    return mapping


def default_mapping_method(run_dir: str | os.PathLike | None, gt: GroundTruth | None) -> str:
    """``clip-text`` when there is no ground truth, no saved mapping, but cluster names; else ``hungarian``."""
    if gt is None and run_dir is not None and not (Path(run_dir) / MAPPING_FILE).is_file() \
            and (Path(run_dir) / NAMES_FILE).is_file():
        return CLIP_TEXT
    return "hungarian"


def to_entries(props: Proposals, labels: list[str | None], keep_cluster: bool) -> list[dict]:
    """Results-schema entries; proposals of a column whose label is ``None`` (a cluster without a
    class) are left out."""
    out = []
    for k, score, start, end in zip(props.column.tolist(), props.score.tolist(), props.start.tolist(), props.end.tolist()):
        if labels[k] is None:
            continue
        entry = {"label": labels[k], "score": score, "segment": [start, end]}
        if keep_cluster:
            entry["cluster"] = k
        out.append(entry)
    return out


def predict_video(run, features: dict[str, np.ndarray], has_audio: bool, grid: SnippetGrid,
                  duration_s: float | None, cfg: ProposalConfig) -> tuple[dict, Proposals]:
    """The model's outputs and the proposals of one video."""
    out = run.predict(features, has_audio)
    return out, generate_proposals(out["cas"], out["attention"], out["video_scores"], grid, duration_s, cfg)


def select_videos(records: dict[str, dict], gt: GroundTruth | None, subset: str | None,
                  allow_missing: bool) -> list[tuple[str, dict]]:
    """``(results id, manifest record)`` of the videos to predict: the subset's (ids spelled as in
    the ground truth), or every ``ok`` video of the manifest without ground truth."""
    ok = {vid: r for vid, r in records.items() if r.get("status") == "ok"}
    if gt is None:
        return list(ok.items())
    part = gt.subset(subset)
    chosen, missing = [], []
    for vid in part.database:
        key = canonical_id(vid, ok)
        (missing.append(vid) if key is None else chosen.append((vid, ok[key])))
    if missing and not allow_missing:
        raise PredictError(f"{len(missing)} of the {len(part.database)} videos of subset {subset!r} are not "
                           f"extracted (ok) in the manifest (e.g. {missing[0]!r}); pass --allow-missing to score "
                           "without them (their ground truth then counts as missed)")
    return chosen


def predict_results(run, manifest: str | os.PathLike, gt: GroundTruth | None = None, subset: str | None = None,
                    run_dir: str | os.PathLike | None = None, mapping_method: str = "hungarian",
                    allow_missing: bool = False, quiet: bool = False) -> tuple[dict[str, list[dict]], list[str]]:
    """``({video_id: [entry, ...]}, notes)`` for the chosen videos of ``manifest``
    (see :func:`select_videos`); the notes count what was left out."""
    records = read_manifest(manifest)
    streams = run_streams(run)
    cfg = run.config.proposals
    mapping = cluster_mapping(run, run_dir, gt, mapping_method)
    labels = list(run.classes) if mapping is None else mapping.cluster_to_class
    videos = select_videos(records, gt, subset, allow_missing)
    results: dict[str, list[dict]] = {}
    total = 0
    bar = tqdm(videos, desc="predict", unit="video", disable=quiet or not sys.stderr.isatty())
    for vid, record in bar:
        check_record(run, record, streams)
        features = {s: np.asarray(load_stream(manifest, record, s)) for s in streams}
        _, props = predict_video(run, features, bool(record.get("has_audio", False)), SnippetGrid.from_record(record),
                                 record.get("duration_s"), cfg)
        results[vid] = to_entries(props, labels, keep_cluster=mapping is not None)
        total += len(props)
    notes = []
    if mapping_method == CLIP_TEXT and gt is not None:
        reference = cluster_mapping(run, None, gt, "hungarian")  # from the ground truth, not saved
        same = round(mapping.agreement(reference) * len(mapping.cluster_to_class))
        notes.append(f"clip-text names agree with the ground-truth Hungarian mapping on {same} of "
                     f"{len(mapping.cluster_to_class)} clusters")
    kept = sum(map(len, results.values()))
    if kept < total:
        notes.append(f"{total - kept} proposals of clusters without a class left out")
    if gt is not None and len(videos) < len(gt.subset(subset).database):
        notes.append(f"{len(gt.subset(subset).database) - len(videos)} videos of subset {subset!r} "
                     "missing from the manifest")
    return results, notes
