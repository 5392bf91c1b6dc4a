"""Optical flow for the ``i3d_flow`` stream: RAFT (torchvision) or OpenCV's Dual TV-L1.

Flow is computed between consecutive resampled frames at the resized resolution (short side
256), then centre-cropped to 224 like the RGB frames, clipped to ±20 pixels and scaled to
[-1, 1] (optionally through 8 bits, as flow stored as JPEG is). A snippet of L frames gets L
fields: field ``i`` is frame ``i`` → frame ``i + 1``, and the last one reaches into the next
snippet (``SnippetBatch.next_frames``). At the very end of the video there is no next frame and
the last field repeats the one before it.

Estimators are registered by name (``--flow raft_large | raft_small | tvl1``); each maps uint8
frame pairs ``(N, H, W, 3)`` to fields ``(N, 2, H, W)`` float32 in pixels, channel 0 = x
(rightwards), channel 1 = y (downwards).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..core.registry import Registry
from ..core.weights import WeightsSpec, load_checkpoint, load_state_strict, resolve_weights, seeded_random_init
from .base import NUM_VIEWS, OptionsError, crop_views

#: flow beyond ±FLOW_BOUND pixels is clipped (the convention of the public I3D flow features)
FLOW_BOUND = 20.0
#: frame pairs per network call, by device type. It bounds memory and does not change the
#: numbers. On the CPU 2-4 pairs per call ran fastest (raft_small at 456x256, one thread: 1.09
#: pairs/s against 0.94 with 8); the CUDA value is a memory bound, not a measured optimum.
PAIRS_PER_CALL = {"cpu": 4, "cuda": 32}


def scale_flow(flow: torch.Tensor, bound: float = FLOW_BOUND, quantize: bool = False) -> torch.Tensor:
    """Pixels → [-1, 1]: clip to ±``bound`` and divide by it. With ``quantize`` the clipped value
    is first rounded to 8 bits, ``round((f + bound) * 255 / (2 bound))``, as flow stored as JPEG
    images is, and mapped back with ``q / 255 * 2 - 1``."""
    flow = flow.clamp(-bound, bound)
    if quantize:
        return torch.round((flow + bound) * (255.0 / (2 * bound))) * (2.0 / 255.0) - 1.0
    return flow / bound


@dataclass(frozen=True)
class FlowOptions:
    """The ``i3d_flow`` stream's own options (``ExtractorOptions.extra``)."""

    flow: str = "raft_large"          # --flow
    raft_iters: int = 12              # --raft-iters: RAFT's recurrent updates (torchvision's default)
    flow_quantize: bool = False       # --flow-quantize: through 8 bits, like flow stored as JPEG


def add_flow_arguments(group: argparse._ArgumentGroup) -> None:
    d = FlowOptions()
    group.add_argument("--flow", choices=flow_methods(), default=d.flow,
                       help=f"optical flow method (default {d.flow}; tvl1 needs {TVL1_INSTALL})")
    group.add_argument("--raft-iters", type=int, default=d.raft_iters,
                       help=f"RAFT recurrent updates per frame pair (default {d.raft_iters})")
    group.add_argument("--flow-quantize", action=argparse.BooleanOptionalAction, default=d.flow_quantize,
                       help=f"round clipped flow to 8 bits ((f+{FLOW_BOUND:g})*255/{2 * FLOW_BOUND:g}) before "
                            "scaling, as flow stored as JPEG images is")


class FlowEstimator:
    """Frame pairs ``(N, H, W, 3)`` uint8 → fields ``(N, 2, H, W)`` float32 pixels on ``device``.

    Built as ``cls(options, device, weights_path, random_weights, weights_dir)``.
    """

    name: ClassVar[str] = ""
    weights_id: str = "none"

    def __call__(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def settings(self) -> dict:
        return {"flow": self.name}


#: optical-flow estimators by ``--flow`` name; ``@register_flow("name")`` adds one
FLOW_METHODS: Registry[type[FlowEstimator]] = Registry("flow method", named=True)
register_flow = FLOW_METHODS.register


def flow_methods() -> list[str]:
    return sorted(FLOW_METHODS)


def build_flow(options: FlowOptions, device: torch.device, weights_path: str | None = None,
               random_weights: bool = False, weights_dir: str | None = None) -> FlowEstimator:
    """The estimator registered as ``options.flow``; ``weights_path``: a local checkpoint for it."""
    cls = FLOW_METHODS[options.flow]
    return cls(options, torch.device(device), weights_path, random_weights, weights_dir)


# --- RAFT -----------------------------------------------------------------------------------------

#: torchvision's default weights of each RAFT variant (``Raft_Large_Weights.DEFAULT`` = C_T_SKHT_V2:
#: FlyingChairs → FlyingThings3D → Sintel/KITTI/HD1K/Things; ``Raft_Small_Weights.DEFAULT`` =
#: C_T_V2). torchvision publishes the first 8 hex digits of the sha256 in the file name.
RAFT_WEIGHTS = {
    "raft_large": WeightsSpec("raft_large", "raft_large_C_T_SKHT_V2-ff5fadd5.pth",
                              "https://download.pytorch.org/models/raft_large_C_T_SKHT_V2-ff5fadd5.pth",
                              sha256="ff5fadd5", key_format="torchvision"),
    "raft_small": WeightsSpec("raft_small", "raft_small_C_T_V2-01064c6d.pth",
                              "https://download.pytorch.org/models/raft_small_C_T_V2-01064c6d.pth",
                              sha256="01064c6d", key_format="torchvision"),
}


def pad_to_multiple(x: torch.Tensor, multiple: int = 8) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Replicate-pad ``(N, C, H, W)`` symmetrically up to a multiple (RAFT's ``InputPadder``);
    returns the padded tensor and the ``(left, right, top, bottom)`` padding."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    return (F.pad(x, pad, mode="replicate") if any(pad) else x), pad


class RAFTFlow(FlowEstimator):
    """torchvision's RAFT on frames scaled to [-1, 1] and replicate-padded to a multiple of 8.
    Runs in float32 (its correlation lookups and coordinate updates are not checked in bf16)."""

    variant: ClassVar[str] = ""

    def __init__(self, options: FlowOptions, device: torch.device, weights_path: str | None = None,
                 random_weights: bool = False, weights_dir: str | None = None) -> None:
        if options.raft_iters < 1:
            raise OptionsError(f"--raft-iters must be at least 1, not {options.raft_iters}")
        spec = RAFT_WEIGHTS[self.variant]
        resolved = resolve_weights(spec, weights_path, random_weights, weights_dir)
        with seeded_random_init():
            from torchvision.models import optical_flow  # imported when RAFT is built, not with the module

            self.net = getattr(optical_flow, self.variant)(weights=None, progress=False)
        if resolved.path is not None:
            load_state_strict(self.variant, self.net, load_checkpoint(resolved.path))
        self.net.eval().to(device)
        self.weights_id = resolved.identity
        self.device, self.iters = device, options.raft_iters

    @torch.no_grad()
    def __call__(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        h, w = first.shape[1:3]
        images = torch.cat([first, second]).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        images, (left, _, top, _) = pad_to_multiple(images)
        one, two = images.chunk(2)
        flow = self.net(one.contiguous(), two.contiguous(), num_flow_updates=self.iters)[-1]
        return flow[:, :, top:top + h, left:left + w].float()

    def settings(self) -> dict:
        return {"flow": self.name, "raft_iters": self.iters, "flow_weights": self.weights_id}


@register_flow("raft_large")
class RAFTLarge(RAFTFlow):
    variant = "raft_large"


@register_flow("raft_small")
class RAFTSmall(RAFTFlow):
    variant = "raft_small"


# --- TV-L1 ----------------------------------------------------------------------------------------

TVL1_INSTALL = "pip install 'clipae[tvl1]'  (opencv-contrib-python-headless >= 4.10; uninstall opencv-python first if present)"


def _opencv_optflow():
    """``cv2`` with the contrib module ``optflow`` and its ``DualTVL1OpticalFlow_create`` (the same
    name and module in OpenCV 4.10 to 4.14 and 5.0), or an OptionsError that says how to install it."""
    try:
        import cv2
    except ImportError as e:  # absent, or a build for another numpy (4.9 and older with numpy 2)
        reason = str(e).partition("\n")[0]
        raise OptionsError(f"--flow tvl1 needs OpenCV's contrib modules ({reason}): {TVL1_INSTALL}") from None
    if not hasattr(getattr(cv2, "optflow", None), "DualTVL1OpticalFlow_create"):
        raise OptionsError(f"--flow tvl1: this OpenCV ({cv2.__version__}) has no contrib 'optflow' module: {TVL1_INSTALL}")
    return cv2


@register_flow("tvl1")
class TVL1Flow(FlowEstimator):
    """OpenCV's Dual TV-L1 (``cv2.optflow.DualTVL1OpticalFlow_create()`` with its default
    parameters) on grayscale frames, on the CPU, one pair at a time."""

    def __init__(self, options: FlowOptions, device: torch.device, weights_path: str | None = None,
                 random_weights: bool = False, weights_dir: str | None = None) -> None:
        if weights_path is not None:
            raise OptionsError("--flow tvl1 has no weights to pass")
        self.cv2 = _opencv_optflow()
        self.tvl1 = self.cv2.optflow.DualTVL1OpticalFlow_create()
        self.device = device

    def __call__(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """RGB frames ``(N, H, W, 3)`` uint8 (any device) → fields ``(N, 2, H, W)`` float32 pixels on
        ``self.device``, channel 0 = x (rightwards), channel 1 = y (downwards)."""
        gray = [[self.cv2.cvtColor(np.ascontiguousarray(f), self.cv2.COLOR_RGB2GRAY) for f in x.cpu().numpy()]
                for x in (first, second)]
        fields = np.stack([self.tvl1.calc(a, b, None) for a, b in zip(*gray)])  # (N, H, W, 2)
        return torch.from_numpy(fields).permute(0, 3, 1, 2).float().to(self.device)


# --- snippets -------------------------------------------------------------------------------------

def snippet_flow(estimator: FlowEstimator, frames: np.ndarray, next_frames: np.ndarray, has_next: np.ndarray,
                 crop: int, device: torch.device, crops: str = "center") -> torch.Tensor:
    """Flow fields of a batch of snippets, cropped like the frames, in pixels (not clipped).

    frames (B, L, H, W, 3) uint8, next_frames (B, H, W, 3) uint8, has_next (B,) bool
    → (B*V, 2, L, crop, crop) float32 on ``device``, the V views of ``crops``
    (:func:`clipae.extractors.base.crop_views`, mirrored views with x negated) of snippet ``b`` at
    rows ``b*V .. b*V+V-1``: field ``i`` of a snippet is its frame ``i`` → frame ``i + 1``, the
    last one is frame ``L - 1`` → ``next_frames``. Where ``has_next`` is false the last field
    repeats field ``L - 2`` (zeros for one-frame snippets).
    """
    b, length = frames.shape[:2]
    current = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    following = torch.cat([current[:, 1:], torch.from_numpy(np.ascontiguousarray(next_frames)).to(device)[:, None]], 1)
    has_next = torch.as_tensor(np.asarray(has_next, dtype=bool))
    computed = torch.ones(b, length, dtype=torch.bool)
    computed[:, -1] = has_next
    pairs = computed.flatten().nonzero().squeeze(1).to(device)
    current, following = current.flatten(0, 1), following.flatten(0, 1)
    views = NUM_VIEWS[crops]
    fields = torch.zeros(b * length, views, crop, crop, 2, device=device)
    step = PAIRS_PER_CALL["cuda" if torch.device(device).type == "cuda" else "cpu"]
    for start in range(0, len(pairs), step):
        idx = pairs[start:start + step]
        full = estimator(current[idx], following[idx]).permute(0, 2, 3, 1)  # (n, H, W, 2)
        fields[idx] = crop_views(full, crop, crops, flow=True).to(device)
    fields = fields.view(b, length, views, crop, crop, 2)
    last = (~has_next).nonzero().squeeze(1).to(device)
    if length > 1 and len(last):
        fields[last, -1] = fields[last, -2]
    return fields.permute(0, 2, 5, 1, 3, 4).flatten(0, 1)
