"""The UGCT localizer (Yang et al., CVPR 2021 / TPAMI 2022): two attention-based streams.

Each stream (RGB, flow) is an attention-based weakly-supervised localizer in the STPN / W-TALC
style: temporal convolutions embed the snippets, then 1×1 heads give

- the T-CAM: logits over the K action classes, ``(B, T, K)``
- the foreground attention in [0, 1], ``(B, T)``
- the log-variance of that attention, ``(B, T)``: UGCT's uncertainty, which weighs the pseudo-label
  loss each stream receives from the other (``losses.collaboration_loss``).

Video-level scores come from top-k multiple-instance pooling of the T-CAM (:func:`topk_pool`) and
from attention-weighted pooling (:func:`weighted_pool`). The training losses live in ``losses.py``;
:func:`fuse_outputs` turns both streams into the inference outputs.
"""
from __future__ import annotations

import torch
from torch import nn


def weighted_pool(logits: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Weighted mean over valid snippets: logits ``(B, T, C)``, weights ``(B, T)`` → ``(B, C)``."""
    w = weights * mask.to(weights.dtype)
    return (logits * w[..., None]).sum(dim=1) / w.sum(dim=1, keepdim=True).clamp(min=1e-6)


def contrast_pool(logits: torch.Tensor, attention: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """The attention-weighted mean of ``logits`` ``(B, T, C)`` minus ``beta`` times its mean weighted by
    ``1 - attention`` ``(B, T)`` → ``(B, C)``: what is on every snippet of a video (its scene) counts
    ``beta`` less (``beta = 0``: STPN's foreground pooling)."""
    pooled = weighted_pool(logits, attention, mask)
    return pooled - beta * weighted_pool(logits, 1.0 - attention, mask) if beta else pooled


def topk_pool(logits: torch.Tensor, mask: torch.Tensor, ratio: int) -> torch.Tensor:
    """Mean of the top ``k = ceil(T_valid / ratio)`` snippet logits per class: ``(B, T, C)`` → ``(B, C)``."""
    lengths = mask.sum(dim=1)                                            # (B,)
    k = torch.clamp((lengths + ratio - 1) // ratio, min=1)               # per video
    kmax = int(k.max())
    masked = logits.masked_fill(~mask[..., None], torch.finfo(logits.dtype).min)
    top = masked.topk(kmax, dim=1).values                                # (B, kmax, C)
    keep = (torch.arange(kmax, device=logits.device)[None, :] < k[:, None]).to(logits.dtype)
    return (top * keep[..., None]).sum(dim=1) / k[:, None].to(logits.dtype)


class TemporalConv(nn.Module):
    """``Conv1d(in_dim, out_dim, kernel_size=3, padding=1)`` on ``(B, T, C)`` features.

    Written as one matrix product ``(B·T, C) × (C, 3·out)`` followed by shifted sums, so features stay
    in the ``(B, T, C)`` layout of the rest of the model (no transposed copies of ``(B, T, 2048)``).
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True):
        super().__init__()
        self.out_dim = out_dim
        self.proj = nn.Linear(in_dim, 3 * out_dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prev, cur, nxt = self.proj(x).split(self.out_dim, dim=-1)        # taps for t-1, t, t+1
        y = cur.clone()
        y[:, 1:] += prev[:, :-1]
        y[:, :-1] += nxt[:, 1:]
        return y if self.bias is None else y + self.bias


class StreamLocalizer(nn.Module):
    """One UGCT stream.

    The T-CAM reads the stream's own features ``x`` ``(B, T, Dx)``; the foreground attention and its
    uncertainty read ``x`` concatenated with ``context`` ``(B, T, Dc)`` (the CAF / CCP outputs in
    CLIP-AE, nothing in the baseline) through a separate branch (like BaS-Net's filtering module).
    Keeping the T-CAM local means class evidence can only come from the snippets themselves, so the
    attention cannot collapse onto background made class-like by temporally mixed context features.
    """

    def __init__(self, in_dim: int, context_dim: int, hidden_dim: int, attention_dim: int, num_classes: int,
                 dropout: float):
        super().__init__()
        self.embed = TemporalConv(in_dim, hidden_dim)
        self.cas = nn.Linear(hidden_dim, num_classes)
        # One temporal convolution over [x; context], split in two so the inputs are never concatenated.
        self.filter_x = TemporalConv(in_dim, attention_dim)
        self.filter_c = TemporalConv(context_dim, attention_dim, bias=False) if context_dim else None
        self.attention = nn.Linear(attention_dim, 1)
        self.log_var = nn.Linear(attention_dim, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x`` ``(B, T, Dx)`` and ``context`` ``(B, T, Dc)`` or None; padded snippets must be zero."""
        m = None if bool(mask.all()) else mask[..., None].to(x.dtype)
        h = self.dropout(torch.relu(self.embed(x)))                      # (B, T, H)
        g = self.filter_x(x)
        if self.filter_c is not None:
            g = g + self.filter_c(context if m is None else context * m)
        g = self.dropout(torch.relu(g))                                  # (B, T, A)
        if m is not None:
            h, g = h * m, g * m
        return {
            "embedding": h,                                              # (B, T, H)
            "cas_logits": self.cas(h),                                   # (B, T, K)
            "attention": torch.sigmoid(self.attention(g)).squeeze(-1),  # (B, T)
            "log_var": self.log_var(g).squeeze(-1).clamp(-3.0, 3.0),    # (B, T)
        }


class UGCT(nn.Module):
    """Two collaborating streams, keyed by stream name (e.g. ``i3d_rgb``, ``i3d_flow``)."""

    def __init__(self, in_dims: dict[str, int], context_dim: int, hidden_dim: int, attention_dim: int,
                 num_classes: int, dropout: float):
        super().__init__()
        self.streams = nn.ModuleDict({name: StreamLocalizer(d, context_dim, hidden_dim, attention_dim,
                                                            num_classes, dropout)
                                      for name, d in in_dims.items()})

    def forward(self, inputs: dict[str, torch.Tensor], context: torch.Tensor | None,
                mask: torch.Tensor) -> dict[str, dict]:
        return {name: net(inputs[name], context, mask) for name, net in self.streams.items()}


def fuse_outputs(streams: dict[str, dict], mask: torch.Tensor, background_contrast: float = 0.0) -> dict[str, torch.Tensor]:
    """The inference outputs, averaged over the two streams (each value in [0, 1]).

    - ``cas`` ``(B, T, K)``: per-snippet class probabilities, softmax over the K classes of the T-CAM
      (which class a snippet would be *if* it is an action; ``attention`` says whether it is one).
    - ``attention`` ``(B, T)``: foreground attention.
    - ``video_scores`` ``(B, K)``: softmax over the K classes of the attention-weighted mean of the
      T-CAM (STPN's video-level prediction) minus β = ``background_contrast`` times its mean weighted
      by ``1 - attention``: what is on every snippet of a video (its scene) counts β less; they sum to 1.
    """
    cas, att, video = [], [], []
    for out in streams.values():
        logits, a = out["cas_logits"], out["attention"]
        pooled = contrast_pool(logits, a, mask, background_contrast)
        cas.append(logits.softmax(dim=-1))
        att.append(a)
        video.append(pooled.softmax(dim=-1))
    n = len(cas)
    return {"cas": sum(cas) / n, "attention": sum(att) / n, "video_scores": sum(video) / n}
