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
        crop = centre_crop(batch.frames)[:, :, ::4, ::4]                       # (B, L, 56, 56, 3) uint8
        colour = crop.mean(axis=(1, 2, 3), dtype=np.float64) / 255.0 * self.settings()["scale"]  # (B, 3)
        motion = np.abs(batch.next_frames.astype(np.float64) - batch.frames[:, -1]).mean(axis=(1, 2, 3)) / 255.0
        motion = np.where(batch.has_next, motion, 0.0)
        return np.concatenate([colour, motion[:, None]], axis=1).astype(np.float32)


@register_stream("toy_rms")
class ToyRMS(Extractor):
    dim = 1
    inputs = ("audio",)
    audio_window = 15360

    def settings(self) -> dict:
        return {"window_s": 0.96}

    def __call__(self, batch: SnippetBatch) -> np.ndarray:
        audio = batch.audio_centred(self.audio_window).astype(np.float64)
        return np.sqrt((audio ** 2).mean(axis=1, keepdims=True)).astype(np.float32)
