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
from typing import Callable, ClassVar

import numpy as np
import torch

#: modules imported on first use of the registry, so each stream registers itself.
BUILTIN_STREAM_MODULES = ("vggish", "i3d", "clip")


class OptionsError(ValueError):
    """A stream's options are invalid or contradict each other (one line, no traceback)."""


@dataclass
class SnippetBatch:
    """Consecutive snippets of one video, on the snippet grid.

    index:       (B,) int64 snippet indices
    frames:      (B, L, H, W, 3) uint8 RGB, short side resized, *not* cropped; ``None`` when no
                 requested stream reads frames. Past the video's end the final frame repeats.
    next_frames: (B, H, W, 3) uint8, the frame right after each snippet (for flow); equal to the
                 final frame where the video has ended
    has_next:    (B,) bool, whether ``next_frames[b]`` is a real frame after the snippet
    audio:       (B, S) float32 mono 16 kHz windows centred on each snippet's centre, zero-padded
                 outside the audio; ``None`` when no stream reads audio or the video has none
    """

    index: np.ndarray
    frames: np.ndarray | None = None
    next_frames: np.ndarray | None = None
    has_next: np.ndarray | None = None
    audio: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.index)


@dataclass
class ExtractorOptions:
    """What the command line passes to every extractor (each reads what it needs)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 16
    weights_path: str | None = None      # ``--weights NAME=PATH``: use this local file
    random_weights: bool = False          # ``--random-weights``: explicit random initialisation
    weights_dir: str | None = None        # download cache for known checkpoints
    extra: dict = field(default_factory=dict)  # stream-specific options (``--flow``, ``--clip-model``, ...)


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

    weights_id: str = "random"

    def __init__(self, options: ExtractorOptions) -> None:
        self.options = options

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Declare this stream's own command-line options (``--<stream>-...``), if any.

        Each option's ``dest`` is the key under which the extractor reads its value from
        ``ExtractorOptions.extra``; the command line copies the parsed values there.
        """

    def settings(self) -> dict:
        return {}

    @torch.no_grad()
    def __call__(self, batch: SnippetBatch) -> np.ndarray:
        """Features of a batch: ``(B, dim)`` float32."""
        raise NotImplementedError


_REGISTRY: dict[str, type[Extractor]] = {}


def register_stream(name: str) -> Callable[[type[Extractor]], type[Extractor]]:
    def deco(cls: type[Extractor]) -> type[Extractor]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"stream {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_builtins() -> None:
    for mod in BUILTIN_STREAM_MODULES:
        try:
            importlib.import_module(f"{__package__}.{mod}")
        except ModuleNotFoundError as e:  # a stream whose module is not written yet
            if e.name != f"{__package__}.{mod}":
                raise


def available_streams() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def get_stream(name: str) -> type[Extractor]:
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown stream {name!r}; known: {', '.join(sorted(_REGISTRY)) or 'none'}") from None
