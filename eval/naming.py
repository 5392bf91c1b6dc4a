"""Label-free names for the clusters of an unsupervised run, from CLIP text.

``clipae-train ... --class-names NAMES`` (a ``.txt`` of names, or a ground truth whose class names
are taken) calls :func:`name_run` once training is complete. For the run's training videos, with
their last-round cluster ``k(v)``, the model's attention ``a (T,)`` and the ``clip`` rows
``x (T, 512)``:

    video(v)   = normalize(sum_t a_t x_t / sum_t a_t)                 attention-pooled CLIP image feature
    cluster(k) = normalize(mean_{v : k(v) = k} video(v))
    S[k, c]    = cluster(k) · text(c)                                 (K, C) cosine

with ``text(c)`` the prompt-ensembled CLIP text embedding of name ``c``
(:mod:`clipae.extractors.clip_text`, the checkpoint of the ``clip`` features). The names are the
one-to-one assignment maximising ``S`` (Hungarian, :func:`clipae.eval.mapping.hungarian`; clusters
left over when K > C take their most similar name; an empty cluster gets none). The result is a
:class:`~clipae.eval.mapping.ClusterMapping` of method ``clip-text`` saved as
``RUN/cluster_names.json``, which ``clipae-eval --mapping clip-text`` and ``clipae-localize`` use.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from ..models.data import DataError, FeatureStore
from .mapping import CLIP_TEXT, NAMES_FILE, ClusterMapping, hungarian

CLIP_STREAM = "clip"


class TextTower(Protocol):
    weights_id: str

    def embed(self, names: list[str]) -> np.ndarray:
        """``(len(names), dim)`` unit text embeddings."""


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def pooled_video_features(run, manifest: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{video: (dim,)}`` attention-pooled, L2-normalised ``clip`` rows of the run's training videos."""
    ids = list(run.train_assignments)
    outputs = run.predict_manifest(manifest, ids)
    store = FeatureStore.open(manifest)
    store.check_streams(ids, [CLIP_STREAM])
    pooled = {}
    for vid in ids:
        rows = _unit(np.asarray(store.load(vid, [CLIP_STREAM])[CLIP_STREAM], dtype=np.float64))   # (T, dim)
        a = np.asarray(outputs[vid]["attention"], dtype=np.float64).reshape(-1)                    # (T,)
        pooled[vid] = _unit((a[:, None] * rows).sum(0) / max(a.sum(), 1e-12))
    return pooled


def name_clusters(assignments: dict[str, int], pooled: dict[str, np.ndarray], num_clusters: int,
                  names: list[str], text: np.ndarray) -> ClusterMapping:
    """The ``clip-text`` mapping of ``num_clusters`` clusters from pooled video features ``{video: (dim,)}``
    and text rows ``(C, dim)`` (see the module docstring)."""
    text = _unit(np.asarray(text, dtype=np.float64))
    dim = text.shape[1]
    width = {v.shape[0] for v in pooled.values()}
    if width != {dim}:
        raise DataError(f"the clip rows are {sorted(width)}-d but the text embeddings {dim}-d: not one CLIP model")
    centres = np.zeros((num_clusters, dim))
    sizes = np.zeros(num_clusters, dtype=np.int64)
    for vid, k in assignments.items():
        centres[int(k)] += pooled[vid]
        sizes[int(k)] += 1
    centres = _unit(centres)
    similarity = centres @ text.T                                     # (K, C)
    shifted = np.where(sizes[:, None] > 0, similarity - similarity.min() + 1.0, 0.0)  # >0 for hungarian's majority
    picks = hungarian(shifted)
    chosen = [None if sizes[k] == 0 or c is None else names[c] for k, c in enumerate(picks)]
    return ClusterMapping(CLIP_TEXT, list(names), chosen, np.zeros((num_clusters, len(names)), np.int64), similarity)


def name_run(run_dir: str | os.PathLike, manifest: str | os.PathLike, names: list[str], tower: TextTower,
             device: str = "cpu") -> ClusterMapping:
    """Name the clusters of a complete unsupervised run and save ``RUN/cluster_names.json``."""
    from ..models.run import load_run
    run = load_run(run_dir, device=device)
    if not run.train_assignments:
        raise ValueError("--class-names names the clusters of an unsupervised run; this run has none")
    mapping = name_clusters(run.train_assignments, pooled_video_features(run, manifest), len(run.classes),
                            names, tower.embed(names))
    mapping.save(Path(run_dir) / NAMES_FILE)
    return mapping


def name_after_training(run_dir: str | os.PathLike, manifest: str | os.PathLike, class_names: str,
                        weights_dir: str | None = None, random_weights: bool = False, device: str = "cpu") -> str:
    """``clipae-train --class-names``: the text tower of the run's ``clip`` checkpoint, :func:`name_run`,
    and a one-line summary; every failure is one :class:`DataError` line."""
    from ..core.weights import WeightsError
    from ..models.trained_on import TrainedOn
    from .predict import PredictError
    from .zero_shot import read_class_names, text_tower
    try:
        names = read_class_names(class_names)
        trained_on = TrainedOn.load(run_dir)
        if CLIP_STREAM not in trained_on.streams or CLIP_STREAM not in trained_on.weights:
            raise DataError("--class-names needs the run to read the clip stream (not --no-ccp)")
        tower = text_tower(trained_on.streams[CLIP_STREAM].settings.get("model", "ViT-B-16"),
                           trained_on.weights[CLIP_STREAM], weights_dir, random_weights, device)
        mapping = name_run(run_dir, manifest, names, tower, device)
    except (PredictError, WeightsError, ValueError, OSError) as e:
        raise DataError(f"--class-names: {e}") from None
    named = ", ".join(f"{k}={c}" for k, c in enumerate(mapping.cluster_to_class))
    return f"cluster names ({CLIP_TEXT}, {Path(run_dir) / NAMES_FILE}): {named}"
