"""Training losses: UGCT's (top-k MIL, uncertainty-weighted collaboration) and CLIP-AE's Eq. 7-9.

Total loss, per batch::

    L = Σ_streams [L_MIL + L_att + α·mean(attention)] + λ_c·L_collab + λ_s·L_self,
    L_self = L_de-cor + L_ins-dis  (Eq. 9)
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import LossConfig
from .ugct import contrast_pool, topk_pool


def _soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against target distributions (rows of ``target`` normalised; all-zero rows skipped)."""
    total = target.sum(dim=1, keepdim=True)
    valid = total.squeeze(1) > 0
    if not valid.any():
        return logits.sum() * 0.0
    p = target[valid] / total[valid]
    return -(p * logits[valid].log_softmax(dim=-1)).sum(dim=-1).mean()


def mil_loss(stream: dict, labels: torch.Tensor, mask: torch.Tensor, ratio: int,
             background_contrast: float = 0.0) -> torch.Tensor:
    """Video-label losses of one stream, labels ``(B, K)`` (multi-hot, normalised to a distribution).

    - top-k MIL (W-TALC): the mean of the top-k T-CAM logits of each class, softmax over classes,
      against the video labels; this trains the T-CAM;
    - attention (STPN): the attention-weighted mean of the T-CAM, softmax over classes, against the
      video labels; the T-CAM is held fixed here so this term trains only the attention, which
      learns to weight the snippets that carry the video's class. With ``background_contrast`` β
      the pooled T-CAM is taken against the ``(1 − attention)``-weighted one
      (:func:`~clipae.models.ugct.contrast_pool`), so evidence present on every snippet (a scene)
      does not reward an attention that ignores the actions.
    """
    logits, att = stream["cas_logits"], stream["attention"]              # (B, T, K), (B, T)
    mil = _soft_ce(topk_pool(logits, mask, ratio), labels)
    fg = _soft_ce(contrast_pool(logits.detach(), att, mask, background_contrast), labels)
    return mil + fg


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` ``(B, T)`` over the True entries of ``mask``."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1.0)


def collaboration_loss(student: dict, teacher: dict, mask: torch.Tensor, threshold: float) -> torch.Tensor:
    """UGCT: the other stream's attention, binarised at ``threshold``, is an online pseudo-label for
    this stream's attention. Each snippet's squared error is weighted by the predicted uncertainty
    ``s = log σ²`` as ``exp(-s)·(a − â)² + s`` (heteroscedastic weighting, Kendall & Gal): snippets whose
    pseudo-label the stream finds unreliable get a large σ² and count less."""
    target = (teacher["attention"].detach() > threshold).to(student["attention"].dtype)
    err = (student["attention"] - target) ** 2                           # in [0, 1]
    s = student["log_var"]
    return masked_mean(torch.exp(-s) * err + s, mask)


def decorrelation_loss(chi: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 7 for each video: ``‖𝒳 𝒳ᵀ − I‖²`` over the ``d`` feature dimensions, ``(B,)``.

    ``𝒳`` is ``(d, T)`` in the paper (``(B, T, d)`` here): ``𝒳𝒳ᵀ`` is the ``d × d`` correlation between
    feature dimensions over the video's snippets. Each dimension is L2-normalised over time first
    (so the diagonal is 1 and the loss measures the correlation between dimensions) and the squared
    Frobenius norm is divided by ``d``.
    """
    x = chi * mask[..., None].to(chi.dtype)                              # (B, T, d)
    x = x / x.norm(dim=1, keepdim=True).clamp(min=1e-6)
    corr = x.transpose(1, 2) @ x                                         # (B, d, d)
    eye = torch.eye(corr.shape[-1], device=chi.device, dtype=chi.dtype)
    return ((corr - eye) ** 2).sum(dim=(1, 2)) / corr.shape[-1]


class InstanceDiscrimination(nn.Module):
    """Eq. 8: each video's pooled ``z`` must pick its own slot of a per-view momentum memory bank.

    Args:
        num_videos: N, the bank size (one slot per training video).
        dim: the feature dim ``d`` of ``Z_CBP`` / ``Z_VLP``.
        temperature: τ (paper: 1.0).
        momentum: ``m_i ← normalise(μ·m_i + (1−μ)·z_i)`` after each step.
    """

    views = ("cbp", "vlp")

    def __init__(self, num_videos: int, dim: int, temperature: float, momentum: float, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        for v in self.views:
            self.register_buffer(f"bank_{v}", F.normalize(torch.randn(num_videos, dim, generator=g), dim=1))
        self.temperature, self.momentum = temperature, momentum

    @staticmethod
    def pool(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Average pooling over valid snippets and L2 normalisation: ``(B, T, d)`` → ``(B, d)``."""
        m = mask[..., None].to(z.dtype)
        return F.normalize((z * m).sum(1) / m.sum(1).clamp(min=1.0), dim=1)

    def forward(self, ccp: dict, mask: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Loss (mean over the batch, summed over both views) and the pooled ``z`` of each view."""
        loss, pooled = 0.0, {}
        for v in self.views:
            z = self.pool(ccp[v], mask)
            pooled[v] = z.detach()
            logits = z @ getattr(self, f"bank_{v}").t() / self.temperature   # (B, N)
            loss = loss + F.cross_entropy(logits, index)                     # -log(exp(z·m⁺/τ) / Σ_i exp(z·m_i/τ))
        return loss, pooled

    @torch.no_grad()
    def update(self, pooled: dict, index: torch.Tensor) -> None:
        for v in self.views:
            bank = getattr(self, f"bank_{v}")
            bank[index] = F.normalize(self.momentum * bank[index] + (1 - self.momentum) * pooled[v], dim=1)


class CLIPAELoss(nn.Module):
    """All training losses of a batch, and the memory bank of Eq. 8."""

    def __init__(self, cfg: LossConfig, num_videos: int, ccp_dim: int | None, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.insdis = None
        self._pending = None
        if cfg.use_ssl and ccp_dim is not None:
            self.insdis = InstanceDiscrimination(num_videos, ccp_dim, cfg.temperature, cfg.bank_momentum, seed)

    def forward(self, out: dict, labels: torch.Tensor, index: torch.Tensor, collab_on: bool) -> dict:
        """Loss terms of a batch (``total`` included). In training mode the memory-bank update is kept
        for :meth:`update_bank`, to be called after ``backward()`` (the bank is used by this graph)."""
        cfg, mask = self.cfg, out["mask"]
        streams = out["streams"]
        names = list(streams)
        parts: dict[str, torch.Tensor] = {}
        parts["mil"] = sum(mil_loss(streams[n], labels, mask, cfg.topk_ratio, cfg.background_contrast) for n in names)
        parts["sparsity"] = cfg.attention_l1 * sum(masked_mean(streams[n]["attention"], mask) for n in names)
        collab = (collaboration_loss(streams[names[0]], streams[names[1]], mask, cfg.collab_threshold)
                  + collaboration_loss(streams[names[1]], streams[names[0]], mask, cfg.collab_threshold))
        parts["collab"] = collab * (cfg.collab_weight if collab_on else 0.0)  # kept in the graph for DDP
        total = parts["mil"] + parts["sparsity"] + parts["collab"]
        if cfg.use_ssl and "caf" in out:
            has_audio = out["has_audio"]
            de_cbp = decorrelation_loss(out["caf"]["cbp"], mask).mean()
            de_audio = decorrelation_loss(out["caf"]["audio"], mask & has_audio[:, None])
            w = has_audio.to(de_audio.dtype)
            parts["decor"] = de_cbp + (de_audio * w).sum() / w.sum().clamp(min=1.0)   # Eq. 7
            total = total + cfg.ssl_weight * parts["decor"]
        if self.insdis is not None and "ccp" in out:
            parts["insdis"], pooled = self.insdis(out["ccp"], mask, index)          # Eq. 8
            total = total + cfg.ssl_weight * parts["insdis"]                         # Eq. 9 (with decor)
            if self.training:
                self._pending = (pooled, index)
        parts["total"] = total
        return parts

    def update_bank(self, gather: Callable[[dict, torch.Tensor], tuple[dict, torch.Tensor]] | None = None) -> None:
        """Momentum update of the memory bank with the last batch; ``gather`` merges the pooled
        features and indices of all DDP ranks first (so every rank keeps the same bank)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        pooled, index = pending
        if gather is not None:
            pooled, index = gather(pooled, index)
        self.insdis.update(pooled, index)
