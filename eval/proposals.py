"""Temporal proposals from a video's T-CAM and attention (CoLA / DELU style, multi-threshold).

For one video, from the model's outputs ``cas (T, K)``, ``attention (T,)`` and
``video_scores (K,)``, all in [0, 1]:

1. keep the columns (classes, or clusters for an unsupervised run) whose video-level score is at
   least ``class_threshold``; if none passes, the best one (``keep_top_class``);
2. min-max normalise each kept T-CAM column and the attention over time (``normalize``; as CoLA);
3. for every threshold of ``cas_thresholds`` (on the column's T-CAM) and of
   ``attention_thresholds`` (on the attention), the snippets strictly above it form connected
   runs; each run ``[a, b]`` (snippet indices, inclusive) is a candidate;
4. its score is the outer-inner contrast of the column's T-CAM plus the class score
   (CoLA's ``get_proposal_oic``)::

       L = b - a + 1,  outer = [floor(a - λL), a) ∪ (b, floor(b + λL)]  (within the video)
       score = mean(cas[a..b]) - mean(cas[outer]) + γ · video_scores[k]   (mean of nothing: 0)

   with λ = ``outer_ratio`` (0.25) and γ = ``class_score_weight`` (0.2); the same run found at
   several thresholds is kept once (its score does not depend on the threshold);
5. snippet indices become seconds on the snippet grid of DESIGN.md: snippet ``i`` spans
   ``[i*stride/fps, (i*stride + length)/fps)``, so a run spans
   ``[start_s(a), end_s(b)]``, clipped to the video's duration;
6. per column, soft-NMS (Gaussian, ``weight = exp(-IoU² / σ)``, σ = ``soft_nms_sigma`` = 0.3 as
   DELU) or hard NMS (drop IoU ≥ ``nms_threshold``), IoU in seconds; then at most
   ``max_per_video`` proposals by score.

Detections overlapping THUMOS14 ``Ambiguous`` segments are *not* removed here (some codebases
do); the ``thumos14-kit`` protocol handles them as the official kit does.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

import numpy as np

from ..core.grid import SnippetGrid
from ..core.registry import Registry
from ..models.config import ProposalConfig, ProposalConfigError  # noqa: F401  (the settings live in a run's Config)


@dataclass
class Proposals:
    """Proposals of one video, best first. ``column`` indexes ``cas``'s columns.

    column (N,) int; score (N,); start, end (N,) seconds; first, last (N,) snippet indices."""

    column: np.ndarray
    score: np.ndarray
    start: np.ndarray
    end: np.ndarray
    first: np.ndarray
    last: np.ndarray

    def __len__(self) -> int:
        return len(self.score)

    def take(self, idx) -> "Proposals":
        return Proposals(*(getattr(self, f.name)[idx] for f in fields(self)))

    @classmethod
    def concat(cls, parts: list["Proposals"]) -> "Proposals":
        if not parts:
            return cls(np.zeros(0, np.int64), *(np.zeros(0) for _ in range(3)), np.zeros(0, np.int64), np.zeros(0, np.int64))
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))


def minmax(x: np.ndarray) -> np.ndarray:
    """Min-max over time of each column of ``x (T, ...)`` (CoLA's ``minmax_norm``: bounds through
    ReLU, a flat column becomes 0, result clipped to [0, 1])."""
    lo, hi = np.maximum(x.min(axis=0), 0), np.maximum(x.max(axis=0), 0)
    delta = np.where(hi - lo > 0, hi - lo, 1.0)
    return np.clip((x - lo) / delta, 0.0, 1.0)


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected runs of ``mask (R, T)`` rows: inclusive ``first (N,)``, ``last (N,)`` indices."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    _, first = np.nonzero(edges == 1)
    _, stop = np.nonzero(edges == -1)
    return first, stop - 1


def contrast_scores(cas_col: np.ndarray, first: np.ndarray, last: np.ndarray, outer_ratio: float) -> np.ndarray:
    """``mean(inner) - mean(outer)`` of each run on one T-CAM column ``(T,)`` (step 4)."""
    t = len(cas_col)
    csum = np.concatenate([[0.0], np.cumsum(cas_col, dtype=np.float64)])
    length = last - first + 1
    inner = (csum[last + 1] - csum[first]) / length
    o_start = np.maximum(np.floor(first - outer_ratio * length), 0).astype(np.int64)
    o_end = np.minimum(np.floor(last + outer_ratio * length), t - 1).astype(np.int64)
    n_outer = (first - o_start) + (o_end - last)
    outer_sum = (csum[first] - csum[o_start]) + (csum[o_end + 1] - csum[last + 1])
    outer = np.where(n_outer > 0, outer_sum / np.maximum(n_outer, 1), 0.0)
    return inner - outer


def _iou_one(seg: np.ndarray, others: np.ndarray) -> np.ndarray:
    inter = (np.minimum(seg[1], others[:, 1]) - np.maximum(seg[0], others[:, 0])).clip(0)
    return inter / ((seg[1] - seg[0]) + (others[:, 1] - others[:, 0]) - inter)


def soft_nms(segments: np.ndarray, scores: np.ndarray, cfg: ProposalConfig) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian soft-NMS: ``(kept indices in selection order, their decayed scores)``."""
    scores = scores.astype(np.float64).copy()
    remaining = np.arange(len(scores))
    keep, kept_scores = [], []
    while len(remaining):
        i = int(np.argmax(scores[remaining]))
        best = remaining[i]
        keep.append(best)
        kept_scores.append(scores[best])
        remaining = np.delete(remaining, i)
        if len(remaining):
            iou = _iou_one(segments[best], segments[remaining])
            scores[remaining] *= np.exp(-(iou * iou) / cfg.soft_nms_sigma)
    return np.array(keep, dtype=np.int64), np.array(kept_scores)


def hard_nms(segments: np.ndarray, scores: np.ndarray, cfg: ProposalConfig) -> tuple[np.ndarray, np.ndarray]:
    """Greedy NMS dropping IoU >= ``nms_threshold``: ``(kept indices, their scores)``."""
    remaining = np.argsort(-scores, kind="stable")
    keep = []
    while len(remaining):
        best, remaining = remaining[0], remaining[1:]
        keep.append(best)
        remaining = remaining[_iou_one(segments[best], segments[remaining]) < cfg.nms_threshold]
    keep = np.array(keep, dtype=np.int64)
    return keep, scores[keep]


#: name -> ``nms(segments (N, 2), scores (N,), cfg) -> (kept indices, scores)``
#: the NMS variants by ``proposals.nms`` name (the names :data:`~clipae.models.config.NMS_KINDS` accepts)
NMS: Registry[Callable] = Registry("NMS")
NMS.add("soft", soft_nms)
NMS.add("hard", hard_nms)


def generate_proposals(cas: np.ndarray, attention: np.ndarray, video_scores: np.ndarray,
                       grid: SnippetGrid, duration_s: float | None, cfg: ProposalConfig) -> Proposals:
    """Proposals of one video (steps 1–6 of the module docstring).

    cas (T, K), attention (T,), video_scores (K,); ``duration_s`` clips the last segment
    (``None``: no clipping)."""
    cas = np.asarray(cas, dtype=np.float64)
    attention = np.asarray(attention, dtype=np.float64).reshape(-1)
    video_scores = np.asarray(video_scores, dtype=np.float64).reshape(-1)
    if cas.ndim != 2 or cas.shape[0] != attention.shape[0] or cas.shape[1] != video_scores.shape[0]:
        raise ValueError(f"shapes do not agree: cas {cas.shape}, attention {attention.shape}, "
                         f"video_scores {video_scores.shape}")
    kept = np.flatnonzero(video_scores >= cfg.class_threshold)
    if len(kept) == 0 and cfg.keep_top_class:
        kept = np.array([int(np.argmax(video_scores))])
    if cas.shape[0] == 0 or len(kept) == 0:
        return Proposals.concat([])
    if cfg.normalize:
        cas, attention = minmax(cas), minmax(attention)
    cas_thr = np.array(cfg.cas_thresholds)[:, None]
    att_first, att_last = runs(attention[None, :] > np.array(cfg.attention_thresholds)[:, None]) \
        if cfg.attention_thresholds else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    parts = []
    for k in kept:
        cas_first, cas_last = runs(cas[:, k][None, :] > cas_thr) if cfg.cas_thresholds else (att_first[:0], att_last[:0])
        pairs = np.unique(np.stack([np.concatenate([cas_first, att_first]),
                                    np.concatenate([cas_last, att_last])], 1), axis=0)
        if len(pairs) == 0:
            continue
        first, last = pairs[:, 0], pairs[:, 1]
        score = contrast_scores(cas[:, k], first, last, cfg.outer_ratio) + cfg.class_score_weight * video_scores[k]
        start, end = grid.start_s(first).astype(np.float64), grid.end_s(last).astype(np.float64)
        if duration_s is not None:
            end = np.minimum(end, duration_s)
        ok = end > start
        first, last, score, start, end = first[ok], last[ok], score[ok], start[ok], end[ok]
        keep, score = NMS[cfg.nms](np.stack([start, end], 1), score, cfg)
        parts.append(Proposals(np.full(len(keep), k, np.int64), score, start[keep], end[keep], first[keep], last[keep]))
    out = Proposals.concat(parts)
    out = out.take(np.argsort(-out.score, kind="stable"))
    return out.take(slice(0, cfg.max_per_video)) if cfg.max_per_video is not None else out
