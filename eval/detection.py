"""Detection AP exactly as the official ActivityNet evaluator computes it, vectorised.

The official ``Evaluation/eval_detection.py`` (activitynet/ActivityNet), per class:

1. classes are those of the ground truth of the evaluated subset;
2. predictions are sorted by score, descending: ``argsort()[::-1]``, so among equal scores the
   prediction that comes *later* in the file is taken first (this is what the official line gives
   whenever numpy's sort is stable; numpy's default sort does not promise an order for ties, so
   here it is fixed to that stable order);
3. each prediction visits the ground truths of its video by decreasing tIoU (equal tIoU: the later
   ground truth first, for the same reason): a tIoU below the threshold ends the visit as a false
   positive, a ground truth already matched is skipped, otherwise it is a true positive and the
   ground truth is locked; ``tIoU >= threshold`` counts;
4. precision ``TP / (TP + FP)`` and recall ``TP / #GT`` along the sorted predictions, all-point
   interpolated AP (VOC 2011: precision made monotone from the right, summed over recall steps);
5. the mean over classes; a class without any prediction has AP 0.

Zero-length ground-truth segments (ActivityNet v1.2 has some) stay in ``#GT``; their tIoU with
any prediction (which always has ``start < end``, :mod:`clipae.eval.results`) is 0, so they are
never matched for a threshold above 0, exactly as in the official code.

Vectorisation: ground truths of different (video, class) pairs never compete, so the greedy
matching runs in *rounds*: round ``k`` takes the ``k``-th prediction (in score order) of every
(video, class) pair at once, for every threshold, with numpy. The rounds are as many as the most
predictions one video has for one class, not as many as predictions.
"""
from __future__ import annotations

import numpy as np

from .results import EvalInputs

#: ActivityNet's thresholds, built as the official evaluator builds them.
ACTIVITYNET_TIOU = np.linspace(0.5, 0.95, 10)


def segment_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """tIoU of ``pred (..., 2)`` with ``gt (..., 2)`` (broadcast), with the official operations in
    the official order, so ties with a threshold fall the same way."""
    inter = (np.minimum(pred[..., 1], gt[..., 1]) - np.maximum(pred[..., 0], gt[..., 0])).clip(0)
    union = (gt[..., 1] - gt[..., 0]) + (pred[..., 1] - pred[..., 0]) - inter
    return inter.astype(float) / union


def score_order(pred_class: np.ndarray, pred_score: np.ndarray) -> np.ndarray:
    """Prediction indices grouped by class, each class in the official processing order:
    score descending, equal scores later-in-file first."""
    n = len(pred_score)
    return np.lexsort((-np.arange(n), -pred_score, pred_class))


def interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """All-point interpolated AP (VOC 2011) of ``(T, N)`` precision/recall curves → ``(T,)``."""
    t = precision.shape[0]
    mprec = np.hstack([np.zeros((t, 1)), precision, np.zeros((t, 1))])
    mrec = np.hstack([np.zeros((t, 1)), recall, np.ones((t, 1))])
    mprec = np.maximum.accumulate(mprec[:, ::-1], axis=1)[:, ::-1]
    ap = np.empty(t)
    for i in range(t):  # the official sum, term by term in its order
        idx = np.where(mrec[i, 1:] != mrec[i, :-1])[0] + 1
        ap[i] = np.sum((mrec[i, idx] - mrec[i, idx - 1]) * mprec[i, idx])
    return ap


def _match_pairs(pred: np.ndarray, pair: np.ndarray, rank: np.ndarray, gt_pad: np.ndarray, valid: np.ndarray,
                 pred_segments: np.ndarray, tious: np.ndarray, tp: np.ndarray) -> None:
    """Greedy matching of predictions ``pred`` (their ``pair`` and ``rank`` in it) against the
    padded ground truth ``gt_pad (pairs, W, 2)``; sets ``tp[t, p]``."""
    n_pairs, width = valid.shape
    locked = np.zeros((n_pairs, len(tious), width), dtype=bool)
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(rank.max() + 2))
    for k in range(len(bounds) - 1):                    # round k: k-th prediction of every pair
        step = by_rank[bounds[k]:bounds[k + 1]]
        p, g = pred[step], pair[step]
        iou = segment_iou(pred_segments[p][:, None, :], gt_pad[g])                      # (S, W)
        cand = (iou[:, None, :] >= tious[None, :, None]) & valid[g][:, None, :] & ~locked[g]
        key = np.where(cand, iou[:, None, :], -np.inf)                                  # (S, T, W)
        # highest tIoU, equal tIoU -> the later ground truth (last maximum)
        j = width - 1 - np.argmax(key[..., ::-1], axis=2)
        s_idx, t_idx = np.nonzero(cand.any(axis=2))
        locked[g[s_idx], t_idx, j[s_idx, t_idx]] = True
        tp[t_idx, p[s_idx]] = True


def match_predictions(inputs: EvalInputs, tious: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``(T, P)`` bool: whether each prediction is a true positive at each threshold."""
    tious = np.asarray(tious, dtype=np.float64)
    n_pred, n_cls = len(inputs.pred_score), len(inputs.classes)
    tp = np.zeros((len(tious), n_pred), dtype=bool)
    if n_pred == 0 or len(inputs.gt_class) == 0:
        return tp

    # (video, class) pairs that have ground truth, their ground truth in file order.
    gt_key = inputs.gt_video * n_cls + inputs.gt_class
    gt_sorted = np.argsort(gt_key, kind="stable")
    pair_keys, pair_start, pair_size = np.unique(gt_key[gt_sorted], return_index=True, return_counts=True)

    # Predictions whose pair has ground truth, in processing order, with their rank in the pair.
    pred_key = inputs.pred_video * n_cls + inputs.pred_class
    pos = np.searchsorted(pair_keys, pred_key).clip(max=len(pair_keys) - 1)
    has_gt = pair_keys[pos] == pred_key
    seq = order[has_gt[order]]                          # class by class, score order
    seq = seq[np.argsort(pos[seq], kind="stable")]      # then grouped by pair, score order kept
    seq_pair = pos[seq]
    rank = np.arange(len(seq)) - np.searchsorted(seq_pair, seq_pair, side="left")

    # Pairs padded to a width of their own size class (1, 2, 4, ...), so that a few videos with
    # many instances do not widen every round.
    bucket = np.ceil(np.log2(pair_size)).astype(np.int64)
    for b in np.unique(bucket):
        pairs = np.flatnonzero(bucket == b)
        local = np.full(len(pair_keys), -1)
        local[pairs] = np.arange(len(pairs))
        width = int(pair_size[pairs].max())
        sizes = pair_size[pairs]
        slot = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        row = np.repeat(np.arange(len(pairs)), sizes)
        members = np.concatenate([gt_sorted[pair_start[q]:pair_start[q] + pair_size[q]] for q in pairs])
        gt_pad = np.zeros((len(pairs), width, 2))
        gt_pad[row, slot] = inputs.gt_segments[members]
        valid = np.zeros((len(pairs), width), dtype=bool)
        valid[row, slot] = True
        mine = local[seq_pair] >= 0
        if mine.any():
            _match_pairs(seq[mine], local[seq_pair[mine]], rank[mine], gt_pad, valid,
                         inputs.pred_segments, tious, tp)
    return tp


def evaluate(inputs: EvalInputs, tious=ACTIVITYNET_TIOU) -> np.ndarray:
    """``(T, C)`` AP per threshold and class (the official ActivityNet protocol)."""
    tious = np.asarray(tious, dtype=np.float64)
    n_cls = len(inputs.classes)
    order = score_order(inputs.pred_class, inputs.pred_score)
    tp = match_predictions(inputs, tious, order)[:, order]
    npos = inputs.num_gt_per_class.astype(np.float64)
    bounds = np.searchsorted(inputs.pred_class[order], np.arange(n_cls + 1))
    ap = np.zeros((len(tious), n_cls))
    for c in range(n_cls):
        lo, hi = bounds[c], bounds[c + 1]
        if hi == lo:
            continue  # no prediction for this class: AP 0
        tp_c = np.cumsum(tp[:, lo:hi], axis=1).astype(np.float64)
        fp_c = np.cumsum(~tp[:, lo:hi], axis=1).astype(np.float64)
        ap[:, c] = interpolated_ap(tp_c / (tp_c + fp_c), tp_c / npos[c])
    return ap
