"""The CLIP-AE model: CAF and CCP enhance the snippet features, the UGCT localizer reads them.

Data flow for one batch (``B`` videos, ``T`` snippets):

1. :class:`FeatureNorm` standardises each stream with training-set statistics; padded snippets and
   the audio of videos without an audio track are zeroed.
2. CAF (Eq. 1-3) fuses audio ``(B, T, 128)`` with CBP = RGB ⊕ flow ``(B, T, 2048)`` into
   ``𝒳_audio``, ``𝒳_CBP`` ``(B, T, d_x)``; CCP (Eq. 4-6) turns CBP and VLP ``(B, T, 512)`` into
   ``Z_CBP``, ``Z_VLP`` ``(B, T, d)``.
3. Each UGCT stream (RGB, flow) computes its T-CAM from its own features and its foreground
   attention from its own features concatenated with these fused outputs (the localisation head).

With ``use_caf`` and ``use_ccp`` off, step 2 adds nothing and the model is the plain UGCT baseline.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .caf import CrossAttentionFusion
from .ccp import CrossViewCollaboration
from .config import Config
from .ugct import UGCT, fuse_outputs


class FeatureNorm(nn.Module):
    """Per-stream standardisation with training statistics, kept as buffers (saved with the model)."""

    def __init__(self, dims: dict[str, int]):
        super().__init__()
        self.names = list(dims)
        for i, (name, d) in enumerate(dims.items()):
            self.register_buffer(f"mean{i}", torch.zeros(d))
            self.register_buffer(f"std{i}", torch.ones(d))

    def set_stats(self, stats: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        for i, name in enumerate(self.names):
            mean, std = stats[name]
            getattr(self, f"mean{i}").copy_(torch.as_tensor(mean))
            getattr(self, f"std{i}").copy_(torch.as_tensor(std))

    def forward(self, name: str, x: torch.Tensor) -> torch.Tensor:
        i = self.names.index(name)
        return (x - getattr(self, f"mean{i}")) / getattr(self, f"std{i}")


class CLIPAE(nn.Module):
    """UGCT + optional CAF and CCP.

    Args:
        cfg: the run's configuration (``model`` and ``data.streams`` are read).
        dims: ``{stream: dim}`` of every stream read (see :meth:`Config.required_streams`).
        num_classes: K, the number of classes or clusters.
    """

    def __init__(self, cfg: Config, dims: dict[str, int], num_classes: int):
        super().__init__()
        m, s = cfg.model, cfg.data.streams
        self.rgb, self.flow = s.cbp
        self.vlp, self.audio = s.vlp, s.audio
        self.num_classes = num_classes
        self.background_contrast = m.background_contrast
        self.norm = FeatureNorm(dims)
        cbp_dim = dims[self.rgb] + dims[self.flow]
        context = 0
        self.caf = self.ccp = None
        if m.use_caf:
            self.caf = CrossAttentionFusion(dims[self.audio], cbp_dim, m.caf_dim, m.caf_stages)
            context += 2 * m.caf_dim
        if m.use_ccp:
            self.ccp = CrossViewCollaboration(cbp_dim, dims[self.vlp], m.ccp_dim)
            context += 2 * m.ccp_dim
        self.localizer = UGCT({self.rgb: dims[self.rgb], self.flow: dims[self.flow]}, context,
                              m.hidden_dim, m.attention_dim, num_classes, m.dropout)

    def forward(self, batch: dict) -> dict:
        """``batch`` as built by ``data.collate`` → ``streams`` (per-stream localizer outputs), ``mask``,
        ``has_audio`` and, when enabled, ``caf`` (``audio``, ``cbp``) and ``ccp`` (``cbp``, ``vlp``)."""
        mask, has_audio = batch["mask"], batch["has_audio"]
        m = None if bool(mask.all()) else mask[..., None].to(batch[self.rgb].dtype)

        def norm(name):                                                  # standardised, padding zeroed
            x = self.norm(name, batch[name])
            return x if m is None else x * m

        rgb, flow = norm(self.rgb), norm(self.flow)
        cbp = torch.cat([rgb, flow], dim=-1)
        out: dict = {"mask": mask, "has_audio": has_audio}
        fused = []
        if self.caf is not None:
            # a video without an audio track: its placeholder rows (whatever they hold) become zeros here, the one place
            audio = torch.where(has_audio[:, None, None], norm(self.audio), torch.zeros((), dtype=rgb.dtype))
            out["caf"] = self.caf(audio, cbp, mask, has_audio)
            fused += [out["caf"]["cbp"], out["caf"]["audio"]]
        if self.ccp is not None:
            out["ccp"] = self.ccp(cbp, norm(self.vlp), mask)
            fused += [out["ccp"]["cbp"], out["ccp"]["vlp"]]
        context = torch.cat(fused, dim=-1) if fused else None
        out["streams"] = self.localizer({self.rgb: rgb, self.flow: flow}, context, mask)
        return out

    def predict(self, batch: dict) -> dict[str, torch.Tensor]:
        """Inference outputs ``cas`` ``(B, T, K)``, ``attention`` ``(B, T)``, ``video_scores`` ``(B, K)``."""
        out = self.forward(batch)
        return fuse_outputs(out["streams"], out["mask"], self.background_contrast)


def build_model(cfg: Config, dims: dict[str, int], num_classes: int) -> CLIPAE:
    """The model of a configuration; weights initialised from ``torch``'s current seed."""
    return CLIPAE(cfg, dims, num_classes)
