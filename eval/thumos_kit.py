"""The official THUMOS14 detection protocol (``TH14evalDet.m`` of the THUMOS14 evaluation kit).

``--protocol thumos14-kit``. Per class and threshold, the kit's ``TH14eventdetpr``:

1. video by video (ids in sorted order), the video's detections of the class are sorted by
   confidence, descending (MATLAB's ``sort`` is stable: equal confidences keep file order);
2. *ground-truth centric* matching: each ground truth of the class in that video, in file order,
   takes among the still free detections the one of highest overlap (equal overlap: the first in
   confidence order) and locks it if the overlap is **strictly above** the threshold;
3. overlap = intersection / (hull of the two intervals) when they intersect, else 0;
4. a detection left free that intersects an ``Ambiguous`` segment of its video is dropped: neither
   a true nor a false positive;
5. all true positives' confidences, then all false positives', are sorted by confidence
   (stable: on equal confidence every true positive comes before every false positive);
6. AP = the sum of the precision at each true positive / #GT (not interpolated); 0 when the class
   has no true positive.

Differences from the ActivityNet protocol (:mod:`clipae.eval.detection`) therefore come from the
matching direction, ``>`` instead of ``>=``, the ``Ambiguous`` segments and the AP formula.
"""
from __future__ import annotations

import numpy as np

from clipae.eval.results import EvalInputs

#: THUMOS14's thresholds as the field's code builds them.
THUMOS14_TIOU = np.linspace(0.1, 0.7, 7)


def overlap(gt: np.ndarray, det: np.ndarray) -> np.ndarray:
    """The kit's ``intervaloverlapvalseconds``: ``(G, 2) x (D, 2) -> (G, D)``."""
    g, d = gt[:, None, :], det[None, :, :]
    inter = np.minimum(g[..., 1], d[..., 1]) - np.maximum(g[..., 0], d[..., 0])
    hull = np.maximum(g[..., 1], d[..., 1]) - np.minimum(g[..., 0], d[..., 0])
    return np.where(inter > 0, inter / np.where(inter > 0, hull, 1.0), 0.0)


def _class_ap(inputs: EvalInputs, c: int, tious: np.ndarray) -> np.ndarray:
    n_thr = len(tious)
    npos = int(np.sum(inputs.gt_class == c))
    det_rows = np.flatnonzero(inputs.pred_class == c)
    gt_rows = np.flatnonzero(inputs.gt_class == c)
    tp_conf: list[list[np.ndarray]] = [[] for _ in range(n_thr)]
    fp_conf: list[list[np.ndarray]] = [[] for _ in range(n_thr)]
    names = np.asarray(inputs.videos)
    for v in sorted(set(inputs.pred_video[det_rows].tolist()), key=lambda i: names[i]):
        det = det_rows[inputs.pred_video[det_rows] == v]
        det = det[np.argsort(-inputs.pred_score[det], kind="stable")]
        conf = inputs.pred_score[det]
        free = np.ones((n_thr, len(det)), dtype=bool)
        gt = gt_rows[inputs.gt_video[gt_rows] == v]
        if len(gt):
            ov = overlap(inputs.gt_segments[gt], inputs.pred_segments[det])            # (G, D)
            for row in ov:                                   # ground-truth centric, file order
                masked = np.where(free, row[None, :], -np.inf)                         # (T, D)
                best = np.argmax(masked, axis=1)             # first maximum = higher confidence
                take = masked[np.arange(n_thr), best] > tious
                free[np.flatnonzero(take), best[take]] = False
        amb = inputs.amb_segments[inputs.amb_video == v]
        near_amb = overlap(amb, inputs.pred_segments[det]).sum(axis=0) > 0 if len(amb) else np.zeros(len(det), bool)
        for t in range(n_thr):
            tp_conf[t].append(conf[~free[t]])
            fp_conf[t].append(conf[free[t] & ~near_amb])
    ap = np.zeros(n_thr)
    for t in range(n_thr):
        tps = np.concatenate(tp_conf[t]) if tp_conf[t] else np.zeros(0)
        fps = np.concatenate(fp_conf[t]) if fp_conf[t] else np.zeros(0)
        if len(tps) == 0:
            continue
        is_tp = np.concatenate([np.ones(len(tps), bool), np.zeros(len(fps), bool)])
        order = np.argsort(-np.concatenate([tps, fps]), kind="stable")
        is_tp = is_tp[order]
        tp = np.cumsum(is_tp)
        prec = tp / np.arange(1, len(is_tp) + 1)
        ap[t] = prec[is_tp].sum() / npos
    return ap


def evaluate(inputs: EvalInputs, tious=THUMOS14_TIOU) -> np.ndarray:
    """``(T, C)`` AP per threshold and class (the official THUMOS14 kit's protocol)."""
    tious = np.asarray(tious, dtype=np.float64)
    ap = np.zeros((len(tious), len(inputs.classes)))
    for c in range(len(inputs.classes)):
        ap[:, c] = _class_ap(inputs, c, tious)
    return ap
