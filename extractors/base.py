"""The one small interface every feature stream implements, and the registry of streams.

A stream is a class registered under its DESIGN.md name::

    @register_stream("vggish")
    class VGGishExtractor(Extractor):
        dim = 128
        inputs = ("audio",)
        ...

The extraction runner (``clipae.pipeline.extract``) decodes each video once, cuts it into
:class:`SnippetBatch` es on the snippet grid and hands every batch to every requested stream.
It never needs to know which streams exist: adding one is a new file in this package.
"""
from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

import numpy as np
import torch

from ..core.errors import BadInput
from ..core.registry import Registry
from ..decoding.batch import SnippetBatch

#: modules imported on first use of the registry, so each stream registers itself.
BUILTIN_STREAM_MODULES = ("vggish", "i3d_streams", "clip")


class OptionsError(BadInput, ValueError):
    """A stream's options are invalid or contradict each other (one line, no traceback)."""


ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def centre_crop(frames: ArrayT, size: int = 224) -> ArrayT:
    """The central ``size`` x ``size`` square of ``(..., H, W, C)`` frames (numpy or torch).

    Offsets round like ``torchvision.transforms.CenterCrop``; frames smaller than ``size`` are
    an error (the decoder resizes the short side to 256 first).
    """
    h, w = frames.shape[-3], frames.shape[-2]
    if h < size or w < size:
        raise ValueError(f"cannot crop {size}x{size} from {h}x{w} frames")
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return frames[..., top:top + size, left:left + size, :]


#: ``--crops``: spatial views per snippet of the visual streams, by name
CROPS = ("center", "3", "10")
NUM_VIEWS = {"center": 1, "3": 3, "10": 10}


def _flip(x: ArrayT) -> ArrayT:
    """``(..., H, W, C)`` mirrored left to right."""
    return x.flip(-2) if isinstance(x, torch.Tensor) else x[..., ::-1, :]


def _stack(views: list, like) -> ArrayT:
    return torch.stack(views, dim=-4) if isinstance(like, torch.Tensor) else np.stack(views, axis=-4)


def crop_views(frames: ArrayT, size: int = 224, crops: str = "center", flow: bool = False) -> ArrayT:
    """The ``--crops`` views of ``(..., H, W, C)`` frames: ``(..., V, size, size, C)``.

    - ``center``: V = 1, :func:`centre_crop`;
    - ``3``: V = 3 squares along the long side (its start, centre, end), centred on the short side;
    - ``10``: torchvision's ``TenCrop``: top-left, top-right, bottom-left, bottom-right, centre,
      then the same five of the horizontally flipped frames.

    ``flow``: the frames are flow fields ``(..., H, W, 2)`` in pixels (x first); a mirrored field
    also changes the sign of its x component.
    """
    h, w = frames.shape[-3], frames.shape[-2]
    if h < size or w < size:
        raise ValueError(f"cannot crop {size}x{size} from {h}x{w} frames")
    if crops == "center":
        return _stack([centre_crop(frames, size)], frames)
    if crops == "3":
        mid_h, mid_w = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
        if w >= h:
            corners = [(mid_h, 0), (mid_h, mid_w), (mid_h, w - size)]
        else:
            corners = [(0, mid_w), (mid_h, mid_w), (h - size, mid_w)]
        return _stack([frames[..., t:t + size, l:l + size, :] for t, l in corners], frames)
    if crops != "10":
        raise OptionsError(f"--crops must be one of {', '.join(CROPS)}, not {crops!r}")

    def five(x):
        return [x[..., :size, :size, :], x[..., :size, w - size:, :], x[..., h - size:, :size, :],
                x[..., h - size:, w - size:, :], centre_crop(x, size)]

    flipped = _flip(frames)
    if flow:
        sign = torch.tensor([-1.0, 1.0], device=frames.device) if isinstance(frames, torch.Tensor) \
            else np.array([-1.0, 1.0], dtype=frames.dtype)
        flipped = flipped * sign
    return _stack(five(frames) + five(flipped), frames)


def merge_views(rows: ArrayT, views: int, keep: bool) -> ArrayT:
    """``(B*V, dim)`` features of the views of B snippets → ``(B, V, dim)`` if ``keep`` else the
    mean over the views, ``(B, dim)``."""
    rows = rows.reshape(-1, views, rows.shape[-1])
    return rows if keep else rows.mean(1)


#: snippets per network call on a GPU when ``--batch-size`` is not given (on the CPU each stream
#: names its own, :attr:`Extractor.cpu_batch_size`)
GPU_BATCH_SIZE = 16


@dataclass
class ExtractorOptions:
    """What the command line passes to every extractor (each reads what it needs)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = GPU_BATCH_SIZE
    weights_paths: dict = field(default_factory=dict)  # every ``--weights NAME=PATH`` given ({NAME: PATH})
    random_weights: bool = False          # ``--random-weights``: explicit random initialisation
    weights_dir: str | None = None        # download cache for known checkpoints
    extra: dict = field(default_factory=dict)  # stream-specific options (``--flow``, ``--clip-model``, ...)
    crops: str = "center"                  # ``--crops``: spatial views of the visual streams
    keep_crops: bool = False               # ``--keep-crops``: rows ``(crops, dim)`` instead of their mean
    precision: str = "auto"                # ``--precision``: the visual networks' precision (:func:`autocast_dtype`)
    compile: bool = False                  # ``--compile``: CLIP's image tower through ``torch.compile`` (:mod:`.clip`)

    def weights_for(self, name: str) -> str | None:
        """The local checkpoint ``--weights NAME=PATH`` gave for ``name`` (a stream or a file it declares)."""
        return self.weights_paths.get(name)


class Extractor:
    """Base class of a feature stream.

    Subclasses set ``name``, ``dim`` and ``inputs`` (a subset of ``{"frames", "audio"}``) and
    implement :meth:`__call__`. ``weights_id`` is ``"sha256:<hex>"`` or ``"random"``;
    :meth:`settings` returns everything besides the weights that changes the numbers (it feeds
    the manifest's ``config_hash``).
    """

    name: ClassVar[str] = ""
    dim: ClassVar[int] = 0
    inputs: ClassVar[tuple[str, ...]] = ()
    #: audio samples per snippet window (16 kHz), for streams that read audio
    audio_window: ClassVar[int] = 0
    #: further ``--weights NAME=PATH`` names this stream reads from ``options.weights_paths``
    #: besides its own name (e.g. a separate PCA file)
    extra_weights: ClassVar[tuple[str, ...]] = ()

    #: snippets per network call on the CPU when ``--batch-size`` is not given; a run's streams share
    #: one batch, the smallest of theirs (``clipae-extract`` takes 16 on a GPU; docs/speed.md)
    cpu_batch_size: ClassVar[int] = 4

    #: whether the stream honours ``--crops`` / ``--keep-crops`` (:func:`crop_views`, :func:`merge_views`)
    supports_crops: ClassVar[bool] = False

    weights_id: str = "random"

    def __init__(self, options: ExtractorOptions) -> None:
        self.options = options
        if options.crops not in CROPS:
            raise OptionsError(f"--crops must be one of {', '.join(CROPS)}, not {options.crops!r}")
        if (options.crops != "center" or options.keep_crops) and "frames" in self.inputs and not self.supports_crops:
            raise OptionsError(f"stream {self.name} does not take --crops {options.crops}"
                               f"{' --keep-crops' if options.keep_crops else ''}")

    @property
    def views(self) -> int:
        """Spatial views per snippet: ``--crops`` for streams that take crops, else 1."""
        return NUM_VIEWS[self.options.crops] if self.supports_crops else 1

    @property
    def row_shape(self) -> tuple[int, ...]:
        """Shape of one snippet's row: ``(dim,)``, or ``(views, dim)`` with ``--keep-crops``."""
        return (self.views, self.dim) if self.supports_crops and self.options.keep_crops else (self.dim,)

    def crop_settings(self) -> dict:
        """The ``crops`` entry of a visual stream's :meth:`settings` (part of the ``config_hash``);
        empty for the default single centre crop, so earlier manifests keep their hash."""
        if self.options.crops == "center" and not self.options.keep_crops:
            return {}
        return {"crops": self.options.crops, "views": self.views,
                "stored": "per crop (T, crops, dim)" if self.options.keep_crops else "mean over crops"}

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        """Declare this stream's own command-line options (``--<stream>-...``), if any.

        ``clipae-extract`` calls it once per class with an argument group named after the
        stream; each option's ``dest`` is the key under which the extractor reads its value
        from ``ExtractorOptions.extra``.
        """

    def settings(self) -> dict:
        return {}

    @torch.no_grad()
    def __call__(self, batch: SnippetBatch) -> np.ndarray:
        """Features of a batch: ``(B, *row_shape)`` float32 (``(B, dim)`` unless ``--keep-crops``)."""
        raise NotImplementedError


def options_from_extra(options_type: type, extra: dict):
    """A stream's typed options dataclass from ``ExtractorOptions.extra``: the keys it declares
    are taken, the others keep the dataclass defaults (the same defaults ``add_arguments`` shows)."""
    return options_type(**{k: v for k, v in extra.items() if k in options_type.__dataclass_fields__})


#: ``--precision`` choices (:func:`autocast_dtype`)
PRECISIONS = ("auto", "float32", "bfloat16")


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The precision the visual networks run in (None: float32).

    ``auto``: bfloat16 autocast on CUDA, float32 elsewhere; ``float32`` everywhere; ``bfloat16``
    everywhere, also on the CPU, where oneDNN runs the convolutions and matrix products in
    bfloat16 (fast on CPUs with AMX or AVX-512 BF16; the rows then differ from float32's by
    bfloat16 rounding, as on CUDA). RAFT stays in float32 whatever is chosen (:mod:`.flow`)."""
    if precision not in PRECISIONS:
        raise OptionsError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "auto":
        precision = "bfloat16" if torch.device(device).type == "cuda" else "float32"
    return torch.bfloat16 if precision == "bfloat16" else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``, or a no-op context for ``None``."""
    return torch.autocast(torch.device(device).type, dtype=dtype or torch.float32, enabled=dtype is not None)


def precision_name(dtype: torch.dtype | None) -> str:
    """How a stream's network ran, for its ``settings()``: ``"bfloat16 autocast"`` or ``"float32"``."""
    return f"{str(dtype).removeprefix('torch.')} autocast" if dtype is not None else "float32"


def _load_builtins() -> None:
    for mod in BUILTIN_STREAM_MODULES:
        importlib.import_module(f"{__package__}.{mod}")


#: every feature stream by its DESIGN.md name; ``@register_stream("name")`` adds one
STREAMS: Registry[type[Extractor]] = Registry("stream", load=_load_builtins, named=True)
register_stream = STREAMS.register


def available_streams() -> list[str]:
    return sorted(STREAMS)


def get_stream(name: str) -> type[Extractor]:
    return STREAMS[name]
