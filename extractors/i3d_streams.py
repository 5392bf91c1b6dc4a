"""The two I3D streams of DESIGN.md: ``i3d_rgb`` and ``i3d_flow`` (1024-d rows each).

Both take a snippet's frames (short side 256), crop them to 224×224 (the centre, or every view of
``--crops 3|10``, see :func:`clipae.extractors.base.crop_views`) and run the Inception-v1 I3D of
:mod:`clipae.extractors.i3d` on the whole batch of snippets (and views) at once:

* ``i3d_rgb``: the L frames, scaled to [-1, 1] → ``(B, 3, L, 224, 224)``.
* ``i3d_flow``: L flow fields (:mod:`clipae.extractors.flow`) clipped to ±20 and scaled to
  [-1, 1] → ``(B, 2, L, 224, 224)``.

With V views the network sees ``(B*V, C, L, 224, 224)``; the rows are the mean over the views
``(B, 1024)``, or ``(B, V, 1024)`` with ``--keep-crops``.

On CUDA the I3D runs under ``torch.autocast`` in bfloat16; on the CPU in float32. The
precision is part of :meth:`settings` (so of the manifest's ``config_hash``).
"""
from __future__ import annotations

import argparse
from typing import ClassVar

import numpy as np
import torch

from ..core.weights import resolve_weights, seeded_random_init
from .base import (Extractor, ExtractorOptions, OptionsError, SnippetBatch, autocast, autocast_dtype, crop_views,
                   merge_views, options_from_extra, precision_name, register_stream)
from .flow import FLOW_BOUND, RAFT_WEIGHTS, FlowOptions, add_flow_arguments, build_flow, scale_flow, snippet_flow
from .i3d import FEATURE_DIM, WEIGHTS, i3d, load_i3d_weights

CROP = 224


class I3DStream(Extractor):
    """An I3D over one modality; subclasses turn a batch into the network's input."""

    dim = FEATURE_DIM
    inputs = ("frames",)
    supports_crops = True
    modality: ClassVar[str] = ""
    crop: int = CROP  # the network's input size (tests use smaller inputs)

    def __init__(self, options: ExtractorOptions) -> None:
        super().__init__(options)
        resolved = resolve_weights(WEIGHTS[self.modality], options.weights_for(self.name), options.random_weights,
                                   options.weights_dir)
        with seeded_random_init():
            self.net = i3d(self.modality)
        if resolved.path is not None:
            load_i3d_weights(self.net, resolved.path, name=self.name)
        self.net.fold_batch_norm().to(options.device)
        self.weights_id = resolved.identity
        self.device = torch.device(options.device)
        self.autocast = autocast_dtype(self.device, options.precision)

    def network_input(self, batch: SnippetBatch) -> torch.Tensor:
        """``(B*V, C, L, 224, 224)`` float32 in [-1, 1] on the device, the V views of a snippet together."""
        raise NotImplementedError

    def settings(self) -> dict:
        return {"network": f"i3d_{self.modality}", "crop": self.crop, "feature": "avg_pool after Mixed_5c, time mean",
                "precision": precision_name(self.autocast), **self.crop_settings()}

    @torch.no_grad()
    def __call__(self, batch: SnippetBatch) -> np.ndarray:
        x = self.network_input(batch)
        with autocast(self.device, self.autocast):
            features = self.net.features(x)
        return merge_views(features.float(), self.views, self.options.keep_crops).cpu().numpy()


@register_stream("i3d_rgb")
class I3DRGB(I3DStream):
    modality = "rgb"
    cpu_batch_size = 2   # 2-core CPU: 0.92x the wall time of 4 at 0.89x the peak memory (docs/speed.md)

    def network_input(self, batch: SnippetBatch) -> torch.Tensor:
        views = crop_views(batch.frames, self.crop, self.options.crops)  # (B, L, V, 224, 224, 3)
        frames = torch.from_numpy(np.ascontiguousarray(views)).to(self.device)
        return frames.permute(0, 2, 5, 1, 3, 4).flatten(0, 1).float().div_(127.5).sub_(1.0)  # one float buffer


@register_stream("i3d_flow")
class I3DFlow(I3DStream):
    modality = "flow"
    extra_weights = tuple(RAFT_WEIGHTS)  # --weights raft_large=PATH / raft_small=PATH

    def __init__(self, options: ExtractorOptions) -> None:
        self.flow_options = options_from_extra(FlowOptions, options.extra)
        unused = sorted(set(options.weights_paths) & set(self.extra_weights) - {self.flow_options.flow})
        if unused:
            raise OptionsError(f"--weights {unused[0]}=... is not used with --flow {self.flow_options.flow}")
        super().__init__(options)
        self.flow = build_flow(self.flow_options, self.device, options.weights_for(self.flow_options.flow),
                               options.random_weights, options.weights_dir)

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        add_flow_arguments(group)

    def network_input(self, batch: SnippetBatch) -> torch.Tensor:
        fields = snippet_flow(self.flow, batch.frames, batch.next_frames, batch.has_next, self.crop, self.device,
                              self.options.crops)  # (B*V, 2, L, 224, 224)
        return scale_flow(fields, FLOW_BOUND, self.flow_options.flow_quantize)

    def settings(self) -> dict:
        return {**super().settings(), **self.flow.settings(), "flow_bound": FLOW_BOUND,
                "flow_quantize": self.flow_options.flow_quantize}
