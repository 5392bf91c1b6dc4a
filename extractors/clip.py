"""The ``clip`` stream: open_clip ViT-B/16 (or ViT-B/32) image embeddings with OpenAI's weights.

Per snippet: K evenly spaced frames (``--clip-frames K``, default all L), each through
open_clip's own preprocessing for the model (resize the short side to 224 with bicubic
antialiasing, centre crop 224, normalise with OpenAI's mean and std), then
``model.encode_image``. A row is

    normalize(mean_k normalize(encode_image(frame_k)))          (512,)

i.e. every frame embedding is L2-normalised (CLIP compares embeddings by cosine, their norms
carry no meaning), averaged over the snippet, and the mean is L2-normalised again: every row has
unit norm, directly comparable with CLIP text embeddings. ``settings()["normalize"]`` records it.

With ``--crops 3|10`` each frame gives the 224×224 views of
:func:`clipae.extractors.base.crop_views` (taken from the 256 short side, like the I3D streams)
instead of open_clip's resize-to-224 and centre crop; a view's row is computed as above, and the
stored row is the L2-normalised mean of the views' rows ``(512,)``, or every view's row
``(V, 512)`` with ``--keep-crops``.

Weights are OpenAI's release files (TorchScript archives whose sha256 is part of their URL),
downloaded into ``--weights-dir`` and checked like every other checkpoint; open_clip's own
Hugging Face download is not used. ``--weights clip=PATH`` also takes open_clip's
``open_clip_pytorch_model.bin`` or ``open_clip_model.safetensors`` (same key names).
On CUDA the model runs under ``torch.autocast`` in bfloat16.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from PIL import Image

from ..core.weights import (WeightsError, WeightsSpec, check_keys, load_checkpoint, resolve_weights,
                            seeded_random_init)
from .base import (Extractor, ExtractorOptions, OptionsError, SnippetBatch, autocast, autocast_dtype, crop_views,
                   options_from_extra, precision_name, register_stream)
from .torchscript import TorchScriptError, is_torchscript, read_state_dict

_OPENAI = "https://openaipublic.azureedge.net/clip/models/"

#: OpenAI's CLIP releases (the URLs open_clip lists for the ``openai`` tag; the path holds the sha256)
WEIGHTS = {
    "ViT-B-16": WeightsSpec("clip", "ViT-B-16.pt",
                            _OPENAI + "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
                            sha256="5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
                            key_format="openai"),
    "ViT-B-32": WeightsSpec("clip", "ViT-B-32.pt",
                            _OPENAI + "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
                            sha256="40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
                            key_format="openai"),
}
#: OpenAI's models were trained with QuickGELU (open_clip's ``openai`` tag sets the same)
QUICK_GELU = True
#: integers OpenAI's TorchScript archives keep beside the weights
OPENAI_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")
NORMALIZE = "l2 per frame, mean over frames, l2 per row"
#: side of the views of ``--crops 3|10`` (the input size of both ViT-B models)
CLIP_CROP = 224


@dataclass(frozen=True)
class CLIPOptions:
    """The ``clip`` stream's own options (``ExtractorOptions.extra``)."""

    clip_model: str = "ViT-B-16"    # --clip-model
    clip_frames: int = 0            # --clip-frames: frames per snippet, 0 = all
    clip_preprocess: str = "pil"    # --clip-preprocess


def frame_indices(length: int, k: int) -> np.ndarray:
    """``k`` evenly spaced frames of ``length``: the centres of ``k`` equal parts (all if ``k`` is 0)."""
    if k == 0:
        return np.arange(length)
    if not 1 <= k <= length:
        raise OptionsError(f"--clip-frames {k} is not between 1 and the snippet length {length} (0 = all)")
    return ((np.arange(k) + 0.5) * length / k).astype(np.int64)


def load_clip_state(path) -> dict:
    """A CLIP state dict from OpenAI's TorchScript release (its tensor records read directly,
    :mod:`clipae.extractors.torchscript`: none of the archive's code runs), a ``.safetensors`` file
    or a plain PyTorch state dict (``weights_only``). OpenAI's metadata integers are dropped."""
    if is_torchscript(path):
        try:
            state = read_state_dict(path)
        except TorchScriptError as e:
            raise WeightsError(f"cannot load {path} as a TorchScript CLIP checkpoint: {e}") from None
    elif str(path).endswith(".safetensors"):
        from safetensors.torch import load_file
        state = load_file(str(path))
    else:
        state = load_checkpoint(path)
    return {k: v for k, v in state.items() if k not in OPENAI_METADATA_KEYS}


class InferenceQuickGELU(nn.Module):
    """OpenAI's QuickGELU, ``x · σ(1.702 x)``, writing one buffer instead of three when no gradient
    is recorded: the same operations in the same order, so the same bits as open_clip's module."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return x * torch.sigmoid(1.702 * x)
        return (x * 1.702).sigmoid_().mul_(x)


def create_clip(model_name: str):
    """open_clip's model (random weights, eval mode) and its evaluation transform. open_clip (and
    torchvision) are imported here, not with the module: a run without the clip stream never loads them."""
    import open_clip

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # open_clip warns "no pretrained weights": we load them next
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=None,
                                                                     force_quick_gelu=QUICK_GELU)
    finally:
        logging.disable(previous)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, open_clip.transformer.QuickGELU):
                setattr(parent, name, InferenceQuickGELU())
    return model.eval(), preprocess


@register_stream("clip")
class CLIPExtractor(Extractor):
    dim = 512
    inputs = ("frames",)
    supports_crops = True
    cpu_batch_size = 2   # 2-core CPU: 0.191 snippets/s against 0.174 at 4 (docs/speed.md)

    def __init__(self, options: ExtractorOptions) -> None:
        super().__init__(options)
        self.clip_options = o = options_from_extra(CLIPOptions, options.extra)
        if o.clip_model not in WEIGHTS:
            raise OptionsError(f"--clip-model {o.clip_model}: known models are {', '.join(WEIGHTS)}")
        if o.clip_frames < 0:
            raise OptionsError(f"--clip-frames must be 0 (all) or positive, not {o.clip_frames}")
        if o.clip_preprocess not in ("pil", "tensor"):
            raise OptionsError(f"--clip-preprocess must be pil or tensor, not {o.clip_preprocess}")
        resolved = resolve_weights(WEIGHTS[o.clip_model], options.weights_for(self.name), options.random_weights,
                                   options.weights_dir)
        with seeded_random_init():
            model, self.preprocess = create_clip(o.clip_model)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        self.visual = model.visual   # the image tower, (N, 3, 224, 224) -> (N, 512); the text tower is let go
        del model                    # before the checkpoint is read: the two are never in memory together
        if resolved.path is not None:
            state = load_clip_state(resolved.path)
            check_keys(f"clip {o.clip_model}", state, expected)   # the whole checkpoint, text tower included
            self.visual.load_state_dict({k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")})
            del state
        self.device = torch.device(options.device)
        self.visual.to(self.device)
        self.weights_id = resolved.identity
        self.autocast = autocast_dtype(self.device, options.precision)
        # --compile: inductor compiles on the first call and once more when the batch size first
        # changes (~1 min each on a 2-core CPU), then ViT-B/16 runs 1.18x faster in float32 there.
        # Not the I3D: on its channels-last input it ran at 0.38x compiled (docs/speed.md).
        self.encode = torch.compile(self.visual) if options.compile else self.visual   # (N, 3, 224, 224) -> (N, 512)

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        d = CLIPOptions()
        group.add_argument("--clip-model", choices=sorted(WEIGHTS), default=d.clip_model,
                           help=f"open_clip model with OpenAI's weights (default {d.clip_model})")
        group.add_argument("--clip-frames", type=int, default=d.clip_frames, metavar="K",
                           help="evenly spaced frames per snippet (default 0: all)")
        group.add_argument("--clip-preprocess", choices=("pil", "tensor"), default=d.clip_preprocess,
                           help="open_clip's transform on PIL images (default, exact, CPU) or on a batch of "
                                "tensors on the device (faster on a GPU; within about one 8-bit level of pil)")

    def settings(self) -> dict:
        o = self.clip_options
        return {"model": o.clip_model, "quick_gelu": QUICK_GELU, "frames": o.clip_frames or "all",
                "preprocess": o.clip_preprocess, "normalize": NORMALIZE,
                "precision": precision_name(self.autocast),
                **({"compiled": True} if self.options.compile else {}),  # fused kernels round differently
                **self.crop_settings()}

    def images(self, frames: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 → (N, 3, 224, 224) float32 on the device, through open_clip's transform."""
        if self.clip_options.clip_preprocess == "pil":
            return torch.stack([self.preprocess(Image.fromarray(f)) for f in frames]).to(self.device)
        from torchvision.transforms import Normalize

        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        for step in self.preprocess.transforms:
            if isinstance(step, Normalize):  # resampled images are 8-bit in the PIL path: round and clamp alike
                x = x.mul(255).round_().clamp_(0, 255).div_(255)
            x = step(x)
        return x

    @torch.no_grad()
    def __call__(self, batch: SnippetBatch) -> np.ndarray:
        b, length = batch.frames.shape[:2]
        picked = batch.frames[:, frame_indices(length, self.clip_options.clip_frames)]  # (B, K, H, W, 3)
        if self.options.crops != "center":
            picked = crop_views(picked, CLIP_CROP, self.options.crops)                  # (B, K, V, 224, 224, 3)
        k, v = picked.shape[1], self.views
        x = self.images(picked.reshape(b * k * v, *picked.shape[-3:]))
        with autocast(self.device, self.autocast):
            emb = F.normalize(self.encode(x), dim=-1).float()  # (B*K*V, 512), open_clip's encode_image(normalize=True)
        rows = F.normalize(emb.view(b, k, v, -1).mean(dim=1), dim=-1)  # (B, V, 512)
        if not self.options.keep_crops:
            rows = F.normalize(rows.mean(dim=1), dim=-1)
        return rows.cpu().numpy()
