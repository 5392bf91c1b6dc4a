"""Video-level features → K clusters → pseudo video labels (the TCAM / UGCT unsupervised protocol).

Round 0 embeds each video by the mean of its snippet features; later rounds by the mean weighted
with the trained model's foreground attention, so background stops dominating the embedding.
Each view (CBP = RGB ⊕ flow, and VLP when the model uses it) is L2-normalised before concatenation
(TCAM clusters L2-normalised RGB ⊕ flow video features). NMI / ARI against the ground truth are
computed for the log only; they never feed training.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans, SpectralClustering
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.pairwise import euclidean_distances


def pool_views(batch: dict, views: list[list[str]], attention: torch.Tensor | None) -> np.ndarray:
    """``(B, D)`` video embeddings of a padded batch: per view, the (attention-)weighted mean of its
    raw snippet features, L2-normalised; views concatenated."""
    w = batch["mask"].to(torch.float32)
    if attention is not None:
        w = w * attention
    w = w / w.sum(dim=1, keepdim=True).clamp(min=1e-8)
    parts = []
    for streams in views:
        x = torch.cat([batch[s] for s in streams], dim=-1)
        v = (x * w[..., None]).sum(dim=1)
        parts.append(torch.nn.functional.normalize(v, dim=1))
    return torch.cat(parts, dim=1).cpu().numpy()


@torch.no_grad()
def embed_videos(batches: Iterable[dict], views: list[list[str]], model=None,
                 device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Embeddings ``(N, D)`` and the batch ``index`` order ``(N,)`` of full-length video batches.

    Without ``model``: plain mean pooling. With it: pooling weighted by ``model.predict``'s attention.
    """
    embs, order = [], []
    for batch in batches:
        attention = None
        if model is not None:
            dev = {k: v.to(device) for k, v in batch.items()}
            attention = model.predict(dev)["attention"].cpu()
        embs.append(pool_views(batch, views, attention))
        order.append(batch["index"].numpy())
    return np.concatenate(embs), np.concatenate(order)


def cluster(embeddings: np.ndarray, k: int, method: str, seed: int, n_init: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ids ``(N,)`` in ``[0, k)`` and centres ``(k, D)`` (mean of each cluster's members).

    ``kmeans``: scikit-learn k-means. ``spectral``: spectral clustering with a Gaussian (RBF) affinity
    whose bandwidth is the median squared distance between videos (TCAM uses a Gaussian affinity).
    """
    if len(embeddings) < k:
        raise ValueError(f"cannot form {k} clusters from {len(embeddings)} videos")
    if method == "kmeans":
        labels = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(embeddings)
    elif method == "spectral":
        sq = euclidean_distances(embeddings, squared=True)
        gamma = 1.0 / max(float(np.median(sq[np.triu_indices(len(sq), 1)])), 1e-12)
        labels = SpectralClustering(n_clusters=k, affinity="rbf", gamma=gamma, n_init=n_init,
                                    random_state=seed, assign_labels="kmeans").fit_predict(embeddings)
    else:
        raise ValueError(f"unknown clustering method {method!r}")
    labels = labels.astype(np.int64)
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


def cluster_scores(labels: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """NMI and ARI of cluster ids against true single labels (videos with no label, ``-1``, skipped)."""
    keep = truth >= 0
    if not keep.any():
        return {"nmi": float("nan"), "ari": float("nan")}
    return {"nmi": float(normalized_mutual_info_score(truth[keep], labels[keep])),
            "ari": float(adjusted_rand_score(truth[keep], labels[keep]))}
