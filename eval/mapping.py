"""Cluster → class mapping for unsupervised runs.

An unsupervised run's T-CAM columns are clusters, not classes. To score it, each cluster is given
a class from the *training* videos only: ``counts[k, c]`` = how many training videos assigned to
cluster ``k`` carry label ``c`` (a video with several labels counts once for each).

- ``hungarian`` (default): the one-to-one assignment maximising the matched counts
  (``scipy.optimize.linear_sum_assignment``); with more clusters than classes, the clusters it
  leaves out take their majority class;
- ``majority``: each cluster takes its most frequent class (TCAM's protocol); several clusters may
  share a class.

- ``clip-text``: no ground truth at all: each cluster is named by CLIP text
  (:mod:`clipae.eval.naming`, ``clipae-train --class-names``), saved as :data:`NAMES_FILE`.

Under ``majority`` a tie goes to the class first in sorted order and a cluster with no training
video gets no class (its proposals are left out, and counted, at evaluation). The mapping is saved with
the run as JSON (:data:`MAPPING_FILE`) and read back by evaluation and localisation; proposals keep
their raw ``cluster`` next to the mapped label.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..core.errors import BadInput
from ..core.fsio import write_json_atomic
from ..core.registry import Registry

MAPPING_FILE = "cluster_mapping.json"
#: the label-free mapping of ``clipae-train --class-names`` (method :data:`CLIP_TEXT`)
NAMES_FILE = "cluster_names.json"
CLIP_TEXT = "clip-text"


class MappingError(BadInput, ValueError):
    """A mapping that cannot be built or read (one line)."""


def count_matrix(assignments: dict[str, int], video_labels: dict[str, list[str]], num_clusters: int,
                 classes: list[str]) -> np.ndarray:
    """``(K, C)`` int counts of (cluster, label) over the training videos that have labels."""
    cidx = {c: i for i, c in enumerate(classes)}
    counts = np.zeros((num_clusters, len(classes)), dtype=np.int64)
    for vid, k in assignments.items():
        if not 0 <= int(k) < num_clusters:
            raise MappingError(f"video {vid!r} is in cluster {k}, outside 0..{num_clusters - 1}")
        for label in video_labels.get(vid, []):
            if label not in cidx:
                raise MappingError(f"video {vid!r} has label {label!r}, not one of the run's classes")
            counts[int(k), cidx[label]] += 1
    return counts


def majority(counts: np.ndarray) -> list[int | None]:
    """Each cluster's most frequent class (``None`` for an empty cluster)."""
    return [int(np.argmax(row)) if row.sum() > 0 else None for row in counts]


def hungarian(counts: np.ndarray) -> list[int | None]:
    """One-to-one assignment maximising the matched counts; leftover clusters: majority."""
    rows, cols = linear_sum_assignment(counts, maximize=True)
    out = majority(counts)
    for r, c in zip(rows, cols):
        out[int(r)] = int(c)
    return out


#: method name -> ``(K, C) counts -> class index (or None) per cluster``
METHODS: Registry[Callable[[np.ndarray], list[int | None]]] = Registry("mapping method")
METHODS.add("hungarian", hungarian)
METHODS.add("majority", majority)


@dataclass
class ClusterMapping:
    method: str
    classes: list[str]                   # (C,) class names
    cluster_to_class: list[str | None]   # (K,) class of each cluster
    counts: np.ndarray                   # (K, C) training counts it was built from (zeros for clip-text)
    similarity: np.ndarray | None = None  # (K, C) cluster-to-name cosine (clip-text only)

    def label(self, cluster: int) -> str | None:
        return self.cluster_to_class[cluster]

    def matched_fraction(self) -> float:
        """Share of training (video, label) pairs whose cluster maps to that label."""
        cidx = {c: i for i, c in enumerate(self.classes)}
        hit = sum(int(self.counts[k, cidx[c]]) for k, c in enumerate(self.cluster_to_class) if c is not None)
        total = int(self.counts.sum())
        return hit / total if total else 0.0

    def to_json(self) -> dict:
        obj = {"method": self.method, "classes": self.classes,
               "clusters": {str(k): c for k, c in enumerate(self.cluster_to_class)},
               "counts": self.counts.tolist()}
        if self.similarity is not None:
            obj["similarity"] = np.round(self.similarity, 6).tolist()
        return obj

    def agreement(self, other: "ClusterMapping") -> float:
        """Share of clusters given the same class by both mappings (e.g. clip-text vs ground truth)."""
        if len(other.cluster_to_class) != len(self.cluster_to_class):
            raise MappingError(f"mappings of {len(self.cluster_to_class)} and {len(other.cluster_to_class)} clusters")
        same = sum(a is not None and a == b for a, b in zip(self.cluster_to_class, other.cluster_to_class))
        return same / len(self.cluster_to_class)

    @classmethod
    def from_json(cls, obj: dict) -> "ClusterMapping":
        try:
            clusters = obj["clusters"]
            mapping = [clusters[str(k)] for k in range(len(clusters))]
            similarity = np.asarray(obj["similarity"], dtype=np.float64) if "similarity" in obj else None
            return cls(obj["method"], list(obj["classes"]), mapping, np.asarray(obj["counts"], dtype=np.int64),
                       similarity)
        except (KeyError, TypeError) as e:
            raise MappingError(f"not a cluster mapping ({e})") from None

    def save(self, path: str | os.PathLike) -> None:
        write_json_atomic(path, self.to_json(), indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ClusterMapping":
        try:
            return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as e:
            raise MappingError(f"{path}: cannot be read ({e})") from None


def build_mapping(assignments: dict[str, int], video_labels: dict[str, list[str]], num_clusters: int,
                  classes: list[str], method: str = "hungarian") -> ClusterMapping:
    """Map ``num_clusters`` clusters to ``classes`` from the training ``assignments``
    (``{video_id: cluster}``) and the training videos' labels."""
    if method not in METHODS:
        raise MappingError(f"unknown mapping method {method!r} (known: {', '.join(METHODS)})")
    counts = count_matrix(assignments, video_labels, num_clusters, classes)
    if counts.sum() == 0:
        raise MappingError("no training video of the assignments has a ground-truth label")
    return ClusterMapping(method, list(classes), [None if c is None else classes[c] for c in METHODS[method](counts)], counts)
