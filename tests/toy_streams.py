"""Two tiny deterministic streams for testing the extraction stage without network weights.

They plug in exactly like the real ones (``register_stream``), which is the point: the runner
does not change for them. ``clipae-extract --stream-module toy_streams`` loads them (with this
folder on ``PYTHONPATH``).

- ``toy_colour``: per snippet, the mean R, G, B of the centre-cropped frames (every 4th pixel, 0..1), times
  ``--toy-scale``, and the mean absolute difference between the snippet's last frame and the
  next frame (0 when there is none).
- ``toy_rms``: per snippet, the RMS of its 0.96 s audio window.
"""
from __future__ import annotations

import time

import numpy as np

from clipae.bench.soak_stream import SoakRMS, mean_colour, motion
from clipae.extractors.base import Extractor, SnippetBatch, centre_crop, register_stream


@register_stream("toy_colour")
class ToyColour(Extractor):
    dim = 4
    inputs = ("frames",)

    @classmethod
    def add_arguments(cls, group) -> None:
        group.add_argument("--toy-scale", type=float, default=1.0, help="multiply the mean colour")
        group.add_argument("--toy-delay", type=float, default=0.0, help="sleep this long per batch (tests)")

    def settings(self) -> dict:
        return {"crop": 224, "scale": self.options.extra.get("toy_scale", 1.0)}

    def __call__(self, batch: SnippetBatch) -> np.ndarray:
        time.sleep(self.options.extra.get("toy_delay", 0.0))
        colour = mean_colour(centre_crop(batch.frames)) * self.settings()["scale"]   # (B, 3) of the 224 crop
        return np.concatenate([colour, motion(batch)[:, None]], axis=1).astype(np.float32)


@register_stream("toy_rms")
class ToyRMS(SoakRMS):
    """The RMS of each snippet's 0.96 s audio window (the soak benchmark's stream, under its own name)."""

    def settings(self) -> dict:
        return {"window_s": 0.96}
