"""Video-level features → K clusters → pseudo video labels (the TCAM / UGCT unsupervised protocol).

Round 0 has no model yet: it takes the ``cluster.embedding`` below with a label-free actionness
in place of the attention (``cluster.first_embedding``, :data:`FIRST_ROUND`):

- ``auto`` (default): ``split`` when the model has a VLP view (CCP on), else ``actionness``
  (:func:`first_round_name`): for short actions a split of CBP alone is a weaker cue than the distance.
- ``actionness``: each snippet's distance from its video's mean standardised CBP features
  (:func:`distance_actionness`). It says which snippets stand out while actions are a small part of
  the video; once they cover much of it (about 40 % on the videos of ``long`` where it fails), the
  video's mean sits between action and background and the distance no longer tells them apart.
- ``split``: a two-way split of each video's temporally smoothed, standardised snippets of its last
  view (VLP when CCP is on: the CLIP view covers whole instances, Eq. 4-6) by 2-means
  (:func:`split_actionness`). Which side is the action is not known, so the contrast's sign is
  arbitrary per video and round 0 clusters lines, not points (:func:`sign_invariant_kmeans`).
- ``mean``: TCAM's first round, the mean of the raw snippet features.

Later rounds embed what the trained model has learned (``cluster.embedding``, :data:`EMBEDDINGS`):

- ``contrast`` (default): per view, the attention *contrast* of the standardised snippet features,
  ``e = Σ_t (a_t − ā) x_t`` with ``a`` the model's foreground attention and ``ā`` its mean over the
  video. Whatever is constant over a video — its scene, the look shared by all backgrounds — cancels,
  and what remains is how the snippets the model finds action-like differ from the rest of their own
  video. A mean weighted by the attention (``attention``) is dominated by the many background
  snippets whenever the attention is not sharp, so it re-finds the round-0 clusters (a fixed point);
  the contrast does not depend on the background's look at all.
- ``attention``: the attention-weighted mean of the raw features (TCAM's re-embedding).
- ``mean``: the plain mean, every round (no learning in the clustering).

Each view (CBP = RGB ⊕ flow, and VLP when the model uses it) is L2-normalised before concatenation
(TCAM clusters L2-normalised RGB ⊕ flow video features). NMI / ARI / cluster accuracy against the
ground truth are computed for the log only; they never feed training.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans, SpectralClustering
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.pairwise import euclidean_distances

from ..core.registry import Registry


def _weighted_mean(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``(B, T, D)`` features, ``(B, T)`` weights → ``(B, D)`` weighted means."""
    return (x * w[..., None]).sum(dim=1) / w.sum(dim=1, keepdim=True).clamp(min=1e-8)


def mean_pooling(x: torch.Tensor, mask: torch.Tensor, attention: torch.Tensor | None) -> torch.Tensor:
    return _weighted_mean(x, mask.to(x.dtype))


def attention_pooling(x: torch.Tensor, mask: torch.Tensor, attention: torch.Tensor | None) -> torch.Tensor:
    w = mask.to(x.dtype)
    return _weighted_mean(x, w if attention is None else w * attention)


def contrast_pooling(x: torch.Tensor, mask: torch.Tensor, attention: torch.Tensor | None) -> torch.Tensor:
    """``Σ_t (a_t − ā) x_t`` over valid snippets, ``ā`` the video's mean attention: ``(B, T, D)`` → ``(B, D)``."""
    if attention is None:
        return mean_pooling(x, mask, None)
    m = mask.to(x.dtype)
    a = attention * m
    centred = (a - a.sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1.0)) * m
    return (x * centred[..., None]).sum(dim=1)


#: ``cluster.embedding`` name → pooling ``(x (B,T,D), mask (B,T), attention (B,T) | None) -> (B, D)``
EMBEDDINGS: Registry[Callable] = Registry("embedding")
EMBEDDINGS.add("contrast", contrast_pooling)
EMBEDDINGS.add("attention", attention_pooling)
EMBEDDINGS.add("mean", mean_pooling)


def pool_views(batch: dict, views: list[list[str]], attention: torch.Tensor | None,
               pooling: Callable = attention_pooling, norm=None) -> np.ndarray:
    """``(B, D)`` video embeddings of a padded batch: per view, ``pooling`` of its snippet features
    (standardised by ``norm``, the model's :class:`~clipae.models.clipae.FeatureNorm`, when given),
    L2-normalised; views concatenated."""
    parts = []
    for streams in views:
        x = torch.cat([batch[s] if norm is None else norm(s, batch[s]) for s in streams], dim=-1)
        v = pooling(x, batch["mask"], attention)
        parts.append(torch.nn.functional.normalize(v, dim=1))
    return torch.cat(parts, dim=1).cpu().numpy()


def distance_actionness(batch: dict, streams: list[str], norm) -> torch.Tensor:
    """``(B, T)`` label-free actionness: the distance of each snippet's standardised ``streams``
    features from its video's mean, divided by the video's largest (padding: 0)."""
    mask = batch["mask"]
    m = mask[..., None].to(torch.float32)
    x = torch.cat([norm(s, batch[s]) for s in streams], dim=-1) * m
    mean = x.sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1.0)
    d = ((x - mean) * m).norm(dim=-1)
    return d / d.amax(dim=1, keepdim=True).clamp(min=1e-8)


def _smooth(x: torch.Tensor, width: int) -> torch.Tensor:
    """``(T, D)`` → ``(T, D)`` moving average over ``width`` snippets (edges repeated)."""
    if width <= 1 or len(x) < 2:
        return x
    pad = torch.nn.functional.pad(x.T[None], (width // 2, (width - 1) // 2), mode="replicate")
    return torch.nn.functional.avg_pool1d(pad, width, stride=1)[0].T


def split_actionness(batch: dict, streams: list[str], norm, smooth: int = 5) -> torch.Tensor:
    """``(B, T)`` label-free two-way split: 1 for the smaller of the two groups that 2-means finds
    among a video's standardised ``streams`` snippets, moving-averaged over ``smooth`` snippets;
    0 for the other group and for padding. Which group is the action is *not* decided here (the
    smaller one is not always it): :func:`sign_invariant_kmeans` clusters the resulting contrasts."""
    mask = batch["mask"]
    x = torch.cat([norm(s, batch[s]) for s in streams], dim=-1)
    out = torch.zeros(mask.shape, dtype=torch.float32)
    for j, n in enumerate(mask.sum(1).tolist()):
        if n < 2:
            continue
        y = _smooth(x[j, :n].to(torch.float64), smooth).numpy()
        g = KMeans(n_clusters=2, n_init=4, random_state=0).fit_predict(y)
        side = 1 if (g == 1).sum() <= (g == 0).sum() else 0
        out[j, :n] = torch.from_numpy((g == side).astype(np.float32))
    return out


@dataclass(frozen=True)
class FirstRound:
    """A label-free actionness for round 0 (an entry of :data:`FIRST_ROUND`)."""
    actionness: Callable      # (batch, streams, norm, **options) -> (B, T)
    view: int                 # the view whose streams it reads (index into the views)
    signed: bool              # False: the contrast's sign is arbitrary → sign_invariant_kmeans
    options: tuple[str, ...] = ()   # ClusterConfig fields passed to it as keywords (without the prefix)


#: ``cluster.first_embedding`` name → :class:`FirstRound`; ``mean`` (TCAM's first round, no
#: actionness) is :func:`embed_videos` without a model
FIRST_ROUND: Registry[FirstRound] = Registry("first-round embedding")


@torch.no_grad()
def embed_videos(batches: Iterable[dict], views: list[list[str]], model=None,
                 device: torch.device | str = "cpu", embedding: str = "attention",
                 first_round: FirstRound | None = None,
                 first_options: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings ``(N, D)`` and the batch ``index`` order ``(N,)`` of full-length video batches.

    Without ``model``: plain mean pooling of the raw features. With it: ``embedding`` of
    :data:`EMBEDDINGS` on the model's standardised features, weighted by ``model.predict``'s
    attention or, when ``first_round`` (an entry of :data:`FIRST_ROUND`; nothing learnt yet), by
    that label-free actionness of its view, called with ``first_options``.
    """
    first_options = first_options or {}
    embs, order = [], []
    pooling = EMBEDDINGS[embedding] if model is not None else mean_pooling
    for batch in batches:
        attention, norm = None, None
        if model is not None:
            dev = {k: v.to(device) for k, v in batch.items()}
            norm = lambda s, x: model.norm(s, x.to(device)).cpu()  # noqa: E731
            if first_round is not None:
                attention = first_round.actionness(batch, views[first_round.view], norm, **first_options)
            else:
                attention = model.predict(dev)["attention"].cpu()
            if embedding != "contrast":
                norm = None
        embs.append(pool_views(batch, views, attention, pooling, norm))
        order.append(batch["index"].numpy())
    return np.concatenate(embs), np.concatenate(order)


FIRST_ROUND.add("actionness", FirstRound(distance_actionness, view=0, signed=True))
FIRST_ROUND.add("split", FirstRound(split_actionness, view=-1, signed=False, options=("smooth",)))


def first_round_name(name: str, views: list[list[str]]) -> str:
    """``cluster.first_embedding`` as run: ``auto`` is ``split`` when there is a VLP view (a second
    view), ``actionness`` otherwise; any other name is itself."""
    if name != "auto":
        return name
    return "split" if len(views) > 1 else "actionness"


def kmeans(embeddings: np.ndarray, k: int, seed: int, n_init: int) -> np.ndarray:
    """scikit-learn k-means: ``(N, D)`` → cluster ids ``(N,)``."""
    return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(embeddings)


def spectral(embeddings: np.ndarray, k: int, seed: int, n_init: int) -> np.ndarray:
    """Spectral clustering with a Gaussian (RBF) affinity whose bandwidth is the median squared
    distance between videos (TCAM uses a Gaussian affinity): ``(N, D)`` → cluster ids ``(N,)``."""
    sq = euclidean_distances(embeddings, squared=True)
    gamma = 1.0 / max(float(np.median(sq[np.triu_indices(len(sq), 1)])), 1e-12)
    return SpectralClustering(n_clusters=k, affinity="rbf", gamma=gamma, n_init=n_init,
                              random_state=seed, assign_labels="kmeans").fit_predict(embeddings)


#: ``cluster.method`` name → ``(embeddings (N, D), k, seed, n_init) -> ids (N,)``
METHODS: Registry[Callable[[np.ndarray, int, int, int], np.ndarray]] = Registry("clustering method")
METHODS.add("kmeans", kmeans)
METHODS.add("spectral", spectral)


def sign_invariant_kmeans(embeddings: np.ndarray, k: int, seed: int, n_init: int,
                          iters: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """k-means of lines through the origin (e and −e are the same point): ``(N, D)`` → cluster ids
    ``(N,)`` and the embeddings with each sign turned towards its cluster's axis ``(N, D)``.

    A video belongs to the axis ``c`` (unit) with the largest ``(e·c)²``; each axis is the principal
    direction of its members (first right singular vector). Seeded k-means++-style starts on the
    distance ``1 − cos²``; of ``n_init`` starts the one with the largest ``Σ (e·c)²`` is kept.
    """
    if len(embeddings) < k:
        raise ValueError(f"cannot form {k} clusters from {len(embeddings)} videos")
    e = np.asarray(embeddings, dtype=np.float64)
    u = e / np.linalg.norm(e, axis=1, keepdims=True).clip(min=1e-12)
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(max(1, n_init)):
        axes = [u[rng.integers(len(u))]]
        for _ in range(1, k):
            d = 1.0 - np.max((u @ np.stack(axes).T) ** 2, axis=1)
            p = d.clip(min=0)
            axes.append(u[rng.choice(len(u), p=p / p.sum())] if p.sum() > 1e-12 else u[rng.integers(len(u))])
        axes = np.stack(axes)
        labels = None
        for _ in range(iters):
            new = np.argmax((e @ axes.T) ** 2, axis=1)
            if labels is not None and np.array_equal(new, labels):
                break
            labels = new
            for c in range(k):
                members = e[labels == c]
                if len(members):
                    axes[c] = np.linalg.svd(members, full_matrices=False)[2][0]
        score = float(np.sum(np.max((e @ axes.T) ** 2, axis=1)))
        if best is None or score > best[0]:
            best = (score, labels, axes)
    _, labels, axes = best
    signs = np.sign(np.sum(e * axes[labels], axis=1))
    signs[signs == 0] = 1.0
    return labels.astype(np.int64), (embeddings * signs[:, None]).astype(np.asarray(embeddings).dtype)


def cluster(embeddings: np.ndarray, k: int, method: str, seed: int, n_init: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ids ``(N,)`` in ``[0, k)`` and centres ``(k, D)`` (mean of each cluster's members),
    with ``method`` of :data:`METHODS`."""
    if len(embeddings) < k:
        raise ValueError(f"cannot form {k} clusters from {len(embeddings)} videos")
    labels = np.asarray(METHODS[method](embeddings, k, seed, n_init)).astype(np.int64)
    return labels, centres_of(embeddings, labels, k)


def centres_of(embeddings: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """``(k, D)`` mean embedding of each cluster (zeros for an empty one)."""
    return np.stack([embeddings[labels == c].mean(0) if (labels == c).any() else np.zeros(embeddings.shape[1])
                     for c in range(k)]).astype(np.float32)


def align_clusters(previous: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Renumber ``labels`` so they overlap most with ``previous`` (Hungarian matching).

    Cluster ids are arbitrary; keeping them stable across rounds lets the classifier trained on the
    previous round keep its meaning when training continues.
    """
    overlap = np.zeros((k, k), dtype=np.int64)
    np.add.at(overlap, (labels, previous), 1)
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    mapping = np.empty(k, dtype=np.int64)
    mapping[rows] = cols
    return mapping[labels]


def cluster_accuracy(labels: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of videos whose cluster maps to their class under the best one-to-one mapping
    (Hungarian on the cluster × class counts); ``truth`` without ``-1`` entries."""
    counts = np.zeros((int(labels.max()) + 1, int(truth.max()) + 1), dtype=np.int64)
    np.add.at(counts, (labels, truth), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / len(labels))


def cluster_scores(labels: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """NMI, ARI and cluster accuracy of cluster ids against true single labels (videos with no
    label, ``-1``, skipped)."""
    keep = truth >= 0
    if not keep.any():
        return {"nmi": float("nan"), "ari": float("nan"), "acc": float("nan")}
    return {"nmi": float(normalized_mutual_info_score(truth[keep], labels[keep])),
            "ari": float(adjusted_rand_score(truth[keep], labels[keep])),
            "acc": cluster_accuracy(labels[keep], truth[keep])}


def agreement(previous: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """How much a round's clusters moved: the fraction of videos whose (aligned) id changed, and the
    NMI between the two rounds' assignments."""
    return {"changed": float(np.mean(previous != labels)),
            "agreement_nmi": float(normalized_mutual_info_score(previous, labels))}
