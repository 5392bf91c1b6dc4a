"""VGGish, the AudioSet audio embedding network, as the ``vggish`` stream (128-d per snippet).

Network (``vggish_slim.py`` of tensorflow/models ``research/audioset/vggish``): on a
``96 x 64`` log-mel patch (frames x bands, :mod:`clipae.extractors.logmel`), 3x3 convolutions
(padding 1) with ReLU and 2x2 max-pools, ``64-M-128-M-256-256-M-512-512-M``, giving a
``6 x 4 x 512`` map that is flattened in TensorFlow's NHWC order (frame, band, channel) to 12288
values, then fully connected layers 4096-4096-128 (ReLU after the first two).

**No ReLU after the last layer.** The reference embedding is the *pre-activation* output of the
128-wide layer: ``vggish_slim.py`` builds it with ``activation_fn=None`` and its README says so,
since tensorflow/models PR #9080 (August 2020) fixed "a long-standing bug where the released VGGish
model used post-activation embedding output while the released embeddings were pre-activation".
harritaylor/torchvggish was ported before that fix and still ends with a ReLU; that ReLU has no
parameters, so the same checkpoint serves both. ``--vggish-postprocess relu`` reproduces
torchvggish's (and video_features') raw output.

**Post-processing** (``--vggish-postprocess``, recorded in the manifest through
:meth:`VGGishExtractor.settings`):

* ``none`` (default): the raw 128-d pre-activation embedding. The TensorFlow README advises raw
  embeddings unless one needs compatibility with the released AudioSet / YouTube-8M features,
  and video_features extracts without post-processing too.
* ``relu``: the raw embedding through a ReLU (torchvggish's output).
* ``pca``: ``vggish_postprocess.py``: ``pca_eigen_vectors @ (e - pca_means)`` (PCA with
  whitening), clipped to ``[-2, 2]``, mapped to ``[0, 255]`` and truncated to 8-bit integers as
  NumPy's ``astype(uint8)`` does (torchvggish rounds instead); stored as float32 codes 0..255,
  the format of the released AudioSet embeddings.

**Snippet window.** One VGGish example is 96 frames of 10 ms (0.96 s). Each frame reads 25 ms, so
the 96 frames read ``400 + 95 * 160 = 15600`` samples (0.975 s); ``audio_window`` is exactly
that, and the runner centres it on the snippet centre (``round(centre_s * 16000) - 7800``,
zero-padded outside the audio). The 96 frame centres then lie symmetrically around the snippet
centre, 0.96 s of 10 ms hops, so audio rows align with video rows by construction. Snippets
closer than 0.96 s apart (the default 0.64 s stride) read overlapping windows.

Weights (data, see :mod:`clipae.core.weights`): torchvggish's v0.1 release, a direct port of
the TensorFlow checkpoint. Its file names carry the first 8 hex digits of their sha256 (the
torch.hub convention; torchvggish's conversion notebook names the file after ``shasum -a 256``).
The PCA file is a dict of float64 NumPy arrays (``pca_means`` of shape ``(128,)``; ``(128, 1)``
is accepted too), read with ``weights_only=True``.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..core.weights import WeightsSpec, check_keys, load_checkpoint, resolve_weights, seeded_random_init
from .base import Extractor, ExtractorOptions, OptionsError, SnippetBatch, options_from_extra, register_stream
from .logmel import NUM_BANDS, PATCH_FRAMES, PATCH_SAMPLES, SAMPLE_RATE, LogMel

_RELEASE = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/"

VGGISH_WEIGHTS = WeightsSpec(
    stream="vggish",
    filename="vggish-10086976.pth",
    url=_RELEASE + "vggish-10086976.pth",
    sha256="10086976",
    key_format="torchvggish state dict: features.{0,3,6,8,11,13}.{weight,bias} (Conv2d, OIHW), "
               "embeddings.{0,2,4}.{weight,bias} (Linear, out x in; embeddings.0 reads the 6x4x512 "
               "map flattened in NHWC order)",
)
VGGISH_PCA = WeightsSpec(
    stream="vggish",
    filename="vggish_pca_params-970ea276.pth",
    url=_RELEASE + "vggish_pca_params-970ea276.pth",
    sha256="970ea276",
    key_format="pca_eigen_vectors (128, 128), pca_means (128,) or (128, 1); float64 NumPy arrays",
    option="--vggish-pca",
)

EMBEDDING_SIZE = 128
POSTPROCESS = ("none", "relu", "pca")
QUANTIZE_MIN, QUANTIZE_MAX = -2.0, 2.0
#: seed of ``--random-weights`` (:func:`~clipae.core.weights.seeded_random_init`: the global RNG is left alone)
RANDOM_SEED = 0


@dataclass
class VGGishOptions:
    """The ``vggish`` stream's own options (``ExtractorOptions.extra``, declared by :meth:`VGGishExtractor.add_arguments`)."""

    vggish_postprocess: str = "none"     # ``--vggish-postprocess``: none | relu | pca
    vggish_pca: str | None = None        # ``--vggish-pca``: a local PCA parameter file (with pca)


_CONV_CHANNELS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")


def _vgg_stack() -> nn.Sequential:
    """``(B, 1, 96, 64)`` → ``(B, 512, 6, 4)``; convolutions at indices 0, 3, 6, 8, 11, 13."""
    layers: list[nn.Module] = []
    channels = 1
    for v in _CONV_CHANNELS:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = v
    return nn.Sequential(*layers)


class VGGish(nn.Module):
    """The VGGish network up to its 128-d embedding layer, pre-activation.

    forward: ``(B, 96, 64)`` log-mel patches (frames x bands) → ``(B, 128)``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = _vgg_stack()
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 6 * 4, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, EMBEDDING_SIZE),
        )

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = self.features(patches.unsqueeze(1))     # (B, 512, 6, 4): frames as height, bands as width
        x = x.permute(0, 2, 3, 1).flatten(1)        # (B, 12288) in TensorFlow's NHWC order
        return self.embeddings(x)                   # (B, 128)


class PCAQuantizer(nn.Module):
    """``vggish_postprocess.py``: PCA with whitening, clip to [-2, 2], 8-bit codes.

    forward: ``(B, 128)`` embeddings → ``(B, 128)`` float64 integer codes in ``[0, 255]``.
    """

    def __init__(self, eigen_vectors: torch.Tensor, means: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("eigen_vectors", eigen_vectors.to(torch.float64))   # (128, 128)
        self.register_buffer("means", means.reshape(-1).to(torch.float64))       # (128,)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        whitened = (embeddings.to(self.means) - self.means) @ self.eigen_vectors.T
        clipped = whitened.clamp(QUANTIZE_MIN, QUANTIZE_MAX)
        # NumPy's astype(uint8) truncates; the values are >= 0, so truncation is floor
        return torch.floor((clipped - QUANTIZE_MIN) * (255.0 / (QUANTIZE_MAX - QUANTIZE_MIN)))


def _expected_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _random_init(model: VGGish, seed: int) -> None:
    """He-normal weights and zero biases, drawn inside :func:`seeded_random_init` ``(seed)``."""
    with seeded_random_init(seed):
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                nn.init.normal_(m.weight, 0.0, (2.0 / fan_in) ** 0.5)
                nn.init.zeros_(m.bias)


def _materialize(model: nn.Module) -> None:
    """Give a model built on the ``meta`` device uninitialised CPU storage, in place.

    Does what ``Module.to_empty(device="cpu")`` does without its first-call import of torch's
    symbolic-shape machinery (about 0.5 s of start-up on a 2-core CPU)."""
    for m in model.modules():
        for name, p in m._parameters.items():
            if p is not None:
                m._parameters[name] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype), p.requires_grad)
        for name, b in m._buffers.items():
            if b is not None:
                m._buffers[name] = torch.empty(b.shape, dtype=b.dtype)


def vggish(weights: str | os.PathLike | None = None, seed: int = RANDOM_SEED) -> VGGish:
    """Builder: VGGish with the torchvggish checkpoint ``weights`` loaded strictly (every key
    present with its shape, none left over), or a deterministic random initialisation from
    ``seed`` when ``weights`` is None. Returned in eval mode on the CPU."""
    with torch.device("meta"):
        model = VGGish()
    _materialize(model)
    if weights is None:
        _random_init(model, seed)
    else:
        state = load_checkpoint(weights)
        check_keys(f"VGGish ({weights})", state, _expected_shapes(model))
        model.load_state_dict(state, strict=True)
    return model.eval()


def pca_quantizer(params: str | os.PathLike | None) -> PCAQuantizer:
    """The post-processor from a PCA parameter file (keys of :data:`VGGISH_PCA`), or the identity
    (no rotation, zero means: clip and quantise only) when ``params`` is None."""
    if params is None:
        return PCAQuantizer(torch.eye(EMBEDDING_SIZE), torch.zeros(EMBEDDING_SIZE))
    state = load_checkpoint(params, numpy_arrays=True)
    means = state.get("pca_means")
    if means is not None and tuple(means.shape) == (EMBEDDING_SIZE, 1):
        state = {**state, "pca_means": means.reshape(-1)}
    check_keys(f"VGGish PCA ({params})", state,
               {"pca_eigen_vectors": (EMBEDDING_SIZE, EMBEDDING_SIZE), "pca_means": (EMBEDDING_SIZE,)})
    return PCAQuantizer(state["pca_eigen_vectors"], state["pca_means"])


@register_stream("vggish")
class VGGishExtractor(Extractor):
    """The ``vggish`` stream: ``audio`` ``(B, 15600)`` float32 16 kHz windows centred on the
    snippet centres → ``(B, 128)`` float32, one row per snippet (see the module docstring).

    Options in ``ExtractorOptions.extra`` (declared on the command line by :meth:`add_arguments`):
    ``vggish_postprocess`` (``"none"`` | ``"relu"`` | ``"pca"``, default ``"none"``) and
    ``vggish_pca`` (path of a local PCA parameter file, only with ``"pca"``). With
    ``--random-weights`` the network is initialised from :data:`RANDOM_SEED` and, unless a PCA
    file is given, the PCA step is the identity (recorded as ``"pca_params": "identity"``).
    """

    dim = EMBEDDING_SIZE
    inputs = ("audio",)
    audio_window = PATCH_SAMPLES
    cpu_batch_size = 16  # 2-core CPU: 64.8 snippets/s against 42.4 at 4, the same whole-process peak (docs/speed.md)

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--vggish-postprocess", dest="vggish_postprocess", choices=POSTPROCESS,
                           default=VGGishOptions.vggish_postprocess,
                           help="none: raw pre-activation embedding (default, the TensorFlow reference); "
                                "relu: through a ReLU (torchvggish's output); pca: PCA, clip and 8-bit codes "
                                "0..255 as the released AudioSet embeddings")
        group.add_argument("--vggish-pca", dest="vggish_pca", metavar="PATH", default=None,
                           help=f"local copy of {VGGISH_PCA.filename} (with --vggish-postprocess pca)")

    def __init__(self, options: ExtractorOptions) -> None:
        super().__init__(options)
        o = options_from_extra(VGGishOptions, options.extra)
        self.postprocess = o.vggish_postprocess
        if self.postprocess not in POSTPROCESS:
            raise OptionsError(f"--vggish-postprocess must be one of {', '.join(POSTPROCESS)}, got {self.postprocess!r}")
        pca_path = o.vggish_pca
        if pca_path is not None and self.postprocess != "pca":
            raise OptionsError("--vggish-pca is only used with --vggish-postprocess pca")

        # find every file first, so that a missing one stops the run before anything loads
        resolved = resolve_weights(VGGISH_WEIGHTS, options.weights_for(self.name), options.random_weights, options.weights_dir)
        self.weights_id = resolved.identity
        self.pca_id: str | None = None
        pca_file = None
        if self.postprocess == "pca":
            if options.random_weights and pca_path is None:
                self.pca_id = "identity"
            else:
                params = resolve_weights(VGGISH_PCA, pca_path, False, options.weights_dir)
                pca_file, self.pca_id = params.path, params.identity

        self.device = torch.device(options.device)
        self.frontend = LogMel()  # float64 on the CPU, like the reference
        self.model = vggish(resolved.path).to(self.device)
        self.pca = pca_quantizer(pca_file).to(self.device) if self.postprocess == "pca" else None

    def settings(self) -> dict:
        s = {
            "sample_rate": SAMPLE_RATE,
            "audio_window": self.audio_window,
            "frontend": f"log-mel: 25 ms periodic Hann, 10 ms hop, FFT 512, {NUM_BANDS} HTK mel bands "
                        f"125-7500 Hz, log(mel + 0.01), {PATCH_FRAMES}x{NUM_BANDS} patch",
            "final_relu": self.postprocess == "relu",
            "postprocess": self.postprocess,
        }
        if self.pca_id is not None:
            s["pca_params"] = self.pca_id
        return s

    @torch.no_grad()
    def __call__(self, batch: SnippetBatch) -> np.ndarray:
        if batch.audio is None or batch.audio.ndim != 2 or batch.audio.shape[1] != self.audio_window:
            shape = None if batch.audio is None else batch.audio.shape
            raise ValueError(f"vggish needs (B, {self.audio_window}) audio windows, got {shape}")
        patches = self.frontend(torch.from_numpy(np.asarray(batch.audio)))          # (B, 96, 64) float64
        emb = self.model(patches.to(self.device, torch.float32))                     # (B, 128)
        if self.postprocess == "relu":
            emb = emb.relu()
        elif self.postprocess == "pca":
            emb = self.pca(emb)
        return emb.float().cpu().numpy()
