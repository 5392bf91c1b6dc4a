"""The official ActivityNet detection AP as a plain per-prediction loop (slow on purpose).

A step-by-step transcription of the logic of ``Evaluation/eval_detection.py``
(``compute_average_precision_detection`` and ``interpolated_prec_rec``), with Python lists and
loops instead of the vectorised rounds of :mod:`clipae.eval.detection`. It is the oracle the
tests compare :func:`clipae.eval.detection.evaluate` with, and the baseline that
``clipae-bench eval`` times it against. Sorting uses numpy's *stable* sort, so ties fall as
:mod:`clipae.eval.detection` documents.
"""
from __future__ import annotations

import numpy as np

from .results import EvalInputs


def _interpolated_prec_rec(prec: list[float], rec: list[float]) -> float:
    mprec = [0.0] + list(prec) + [0.0]
    mrec = [0.0] + list(rec) + [1.0]
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = [i for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1]]
    return float(np.sum([(mrec[i] - mrec[i - 1]) * mprec[i] for i in idx]))


def _tiou(target: tuple[float, float], candidates: list[tuple[float, float]]) -> list[float]:
    out = []
    for s, e in candidates:
        inter = max(min(target[1], e) - max(target[0], s), 0.0)
        union = (e - s) + (target[1] - target[0]) - inter
        out.append(inter / union)
    return out


def class_ap(gt: list[tuple[str, float, float]], pred: list[tuple[str, float, float, float]],
             tious) -> list[float]:
    """AP of one class. ``gt``: ``(video, start, end)`` in file order; ``pred``:
    ``(video, start, end, score)`` in file order."""
    if not pred:
        return [0.0] * len(tious)
    npos = float(len(gt))
    lock = [[-1] * len(gt) for _ in tious]
    order = np.argsort(np.array([p[3] for p in pred]), kind="stable")[::-1]
    pred = [pred[i] for i in order]
    gt_by_video: dict[str, list[int]] = {}
    for i, (video, _, _) in enumerate(gt):
        gt_by_video.setdefault(video, []).append(i)
    tp = [[0] * len(pred) for _ in tious]
    fp = [[0] * len(pred) for _ in tious]
    for idx, (video, start, end, _) in enumerate(pred):
        if video not in gt_by_video:
            for t in range(len(tious)):
                fp[t][idx] = 1
            continue
        rows = gt_by_video[video]
        tiou = _tiou((start, end), [(gt[r][1], gt[r][2]) for r in rows])
        visit = np.argsort(np.array(tiou), kind="stable")[::-1]
        for t, thr in enumerate(tious):
            for j in visit:
                if tiou[j] < thr:
                    fp[t][idx] = 1
                    break
                if lock[t][rows[j]] >= 0:
                    continue
                tp[t][idx] = 1
                lock[t][rows[j]] = idx
                break
            if fp[t][idx] == 0 and tp[t][idx] == 0:
                fp[t][idx] = 1
    aps = []
    for t in range(len(tious)):
        tpc = np.cumsum(tp[t]).astype(float)
        fpc = np.cumsum(fp[t]).astype(float)
        aps.append(_interpolated_prec_rec(list(tpc / (tpc + fpc)), list(tpc / npos)))
    return aps


def evaluate(inputs: EvalInputs, tious) -> np.ndarray:
    """``(T, C)`` AP, class by class and prediction by prediction."""
    gt: list[list] = [[] for _ in inputs.classes]
    pred: list[list] = [[] for _ in inputs.classes]
    for v, (s, e), k in zip(inputs.gt_video.tolist(), inputs.gt_segments.tolist(), inputs.gt_class.tolist()):
        gt[k].append((v, s, e))
    for v, (s, e), k, sc in zip(inputs.pred_video.tolist(), inputs.pred_segments.tolist(),
                                inputs.pred_class.tolist(), inputs.pred_score.tolist()):
        pred[k].append((v, s, e, sc))
    ap = np.zeros((len(tious), len(inputs.classes)))
    for c in range(len(inputs.classes)):
        ap[:, c] = class_ap(gt[c], pred[c], tious)
    return ap
