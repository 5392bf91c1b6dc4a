"""Cross-view collaboration paradigm, CCP (paper Sec. 2.2, Eq. 4-6).

Queries and keys of both views come from the concatenation ``M = [X_CBP; X_VLP]`` (Eq. 4) so each
view attends with knowledge of the other; the values stay view-specific (Eq. 5-6).
"""
from __future__ import annotations

import math

import torch
from torch import nn


class ViewAttention(nn.Module):
    """``Softmax(Q Kᵀ / √d) V`` with ``Q = M W^Q``, ``K = M W^K``, ``V = X W^V`` (Eq. 5)."""

    def __init__(self, m_dim: int, view_dim: int, dim: int):
        super().__init__()
        self.w_q = nn.Linear(m_dim, dim, bias=False)
        self.w_k = nn.Linear(m_dim, dim, bias=False)
        self.w_v = nn.Linear(view_dim, dim, bias=False)
        # W^K starts equal to W^Q, so Q Kᵀ starts as a similarity between snippets (each attends to
        # snippets that look like it) instead of a random bilinear form that mixes the whole video.
        self.w_k.weight.data.copy_(self.w_q.weight.data)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, m: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``m`` ``(B, T, Dm)``, ``x`` ``(B, T, Dx)``, ``mask`` ``(B, T)`` → ``Z`` ``(B, T, d)``."""
        q, k, v = self.w_q(m), self.w_k(m), self.w_v(x)
        scores = (q * self.scale) @ k.transpose(1, 2)                      # (B, T, T)
        if not bool(mask.all()):
            scores = scores.masked_fill(~mask[:, None, :], torch.finfo(scores.dtype).min)  # padded keys
        return scores.softmax(dim=-1) @ v


class CrossViewCollaboration(nn.Module):
    """CBP ↔ VLP collaboration: ``(X_CBP (B,T,Dc), X_VLP (B,T,Dv))`` → ``(Z_CBP, Z_VLP)`` each ``(B, T, d)``."""

    def __init__(self, cbp_dim: int, vlp_dim: int, dim: int):
        super().__init__()
        self.cbp = ViewAttention(cbp_dim + vlp_dim, cbp_dim, dim)        # Eq. 5
        self.vlp = ViewAttention(cbp_dim + vlp_dim, vlp_dim, dim)        # Eq. 6

    def forward(self, x_cbp: torch.Tensor, x_vlp: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        m = torch.cat([x_cbp, x_vlp], dim=-1)                            # Eq. 4: M = [X_CBP; X_VLP]
        return {"cbp": self.cbp(m, x_cbp, mask), "vlp": self.vlp(m, x_vlp, mask)}
