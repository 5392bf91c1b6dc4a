"""The official THUMOS14 detection protocol (the updated ``TH14evalDet.m`` of the THUMOS14 kit).

``--protocol thumos14-kit``. Per class and threshold, the kit's ``TH14eventdetpr`` with
``intervaloverlapvalseconds``:

1. video by video, the ids in sorted order (``unique`` of the ground truth's and the detections'
   ids), the video's detections of the class are sorted by confidence, descending (MATLAB's
   ``sort`` is stable: equal confidences keep file order);
2. *ground-truth centric* matching: each ground truth of the class in that video, in file order,
   takes among the still free detections the one of highest overlap (equal overlap: the first in
   confidence order) and locks it if the overlap is **strictly above** the threshold;
3. overlap = intersection / (hull of the two intervals) when they intersect, else 0;
4. a detection left free that intersects an ``Ambiguous`` segment of its video is dropped: neither
   a true nor a false positive;
5. the retained detections of the video (its true positives and the false positives kept by 4)
   are appended *in the video's confidence order*, the videos one after another in sorted-id
   order; this list is then sorted by confidence, stably. Among equal confidences the order is
   therefore by video id, then by position in the video, whatever each detection's true/false
   status (the earlier rule, ``[tpconf fpconf]``: all true positives before all false
   positives, survives only as comments in the updated file);
6. AP = the sum of the precision at each true positive, added one by one in ranking order, / #GT
   (not interpolated); 0 when the class has no true positive or no detection.

Differences from the ActivityNet protocol (:mod:`clipae.eval.detection`) therefore come from the
matching direction, ``>`` instead of ``>=``, the ``Ambiguous`` segments, the tie order and the AP
formula.
"""
from __future__ import annotations

import numpy as np

from .results import EvalInputs

#: THUMOS14's thresholds as the field's code builds them.
THUMOS14_TIOU = np.linspace(0.1, 0.7, 7)


def overlap(gt: np.ndarray, det: np.ndarray) -> np.ndarray:
    """The kit's ``intervaloverlapvalseconds``: ``(G, 2) x (D, 2) -> (G, D)``."""
    g, d = gt[:, None, :], det[None, :, :]
    inter = np.minimum(g[..., 1], d[..., 1]) - np.maximum(g[..., 0], d[..., 0])
    hull = np.maximum(g[..., 1], d[..., 1]) - np.minimum(g[..., 0], d[..., 0])
    return np.where(inter > 0, inter / np.where(inter > 0, hull, 1.0), 0.0)


def _video_detections(inputs: EvalInputs, v: int, det: np.ndarray, gt_rows: np.ndarray,
                      tious: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps 1-4 for the detections ``det`` of one class in video ``v``: ``conf (D,)`` in the
    video's confidence order, ``tp (T, D)`` and ``kept (T, D)`` (a true positive, or a false
    positive that intersects no ``Ambiguous`` segment) in that order."""
    n_thr = len(tious)
    det = det[np.argsort(-inputs.pred_score[det], kind="stable")]
    free = np.ones((n_thr, len(det)), dtype=bool)
    gt = gt_rows[inputs.gt_video[gt_rows] == v]
    if len(gt):
        ov = overlap(inputs.gt_segments[gt], inputs.pred_segments[det])                # (G, D)
        for row in ov:                                       # ground-truth centric, file order
            masked = np.where(free, row[None, :], -np.inf)                             # (T, D)
            best = np.argmax(masked, axis=1)                 # first maximum = higher confidence
            take = masked[np.arange(n_thr), best] > tious
            free[np.flatnonzero(take), best[take]] = False
    amb = inputs.amb_segments[inputs.amb_video == v]
    near_amb = overlap(amb, inputs.pred_segments[det]).sum(axis=0) > 0 if len(amb) else np.zeros(len(det), bool)
    return inputs.pred_score[det], ~free, ~free | ~near_amb[None, :]


def _class_ap(inputs: EvalInputs, c: int, tious: np.ndarray) -> np.ndarray:
    """``(T,)`` AP of class ``c`` at each threshold."""
    n_thr = len(tious)
    npos = int(np.sum(inputs.gt_class == c))
    det_rows = np.flatnonzero(inputs.pred_class == c)
    ap = np.zeros(n_thr)
    if len(det_rows) == 0:
        return ap
    gt_rows = np.flatnonzero(inputs.gt_class == c)
    names = inputs.videos
    per_video = [_video_detections(inputs, v, det_rows[inputs.pred_video[det_rows] == v], gt_rows, tious)
                 for v in sorted(set(inputs.pred_video[det_rows].tolist()), key=lambda i: names[i])]
    conf = np.concatenate([p[0] for p in per_video])                                   # (D,)
    tp = np.concatenate([p[1] for p in per_video], axis=1)                             # (T, D)
    kept = np.concatenate([p[2] for p in per_video], axis=1)                           # (T, D)
    for t in range(n_thr):
        is_tp = tp[t, kept[t]][np.argsort(-conf[kept[t]], kind="stable")]
        if not is_tp.any():
            continue
        prec = np.cumsum(is_tp) / np.arange(1, len(is_tp) + 1)
        ap[t] = np.cumsum(prec[is_tp])[-1] / npos            # the kit's running sum, in order
    return ap


def evaluate(inputs: EvalInputs, tious=THUMOS14_TIOU) -> np.ndarray:
    """``(T, C)`` AP per threshold and class (the official THUMOS14 kit's protocol)."""
    tious = np.asarray(tious, dtype=np.float64)
    ap = np.zeros((len(tious), len(inputs.classes)))
    for c in range(len(inputs.classes)):
        ap[:, c] = _class_ap(inputs, c, tious)
    return ap
