"""Two cheap, deterministic streams for :mod:`clipae.bench.soak` (no network, no weights).

``clipae-extract --stream-module clipae.bench.soak_stream --streams soak_colour,soak_rms``:

- ``soak_colour`` ``(B, 4)``: per snippet, the mean R, G, B of its frames (every 4th pixel,
  0..1) and the mean absolute difference between its last frame and the next one;
- ``soak_rms`` ``(B, 1)``: the RMS of its audio window.

Each row depends only on its own snippet, so a video's rows are identical however batches are
filled and whichever process decodes it: the soak test compares them bit for bit.
"""
from __future__ import annotations

import numpy as np

from ..extractors.base import Extractor, SnippetBatch, register_stream


@register_stream("soak_colour")
class SoakColour(Extractor):
    dim = 4
    inputs = ("frames",)

    def settings(self) -> dict:
        return {"soak": "colour"}

    def __call__(self, batch: SnippetBatch) -> np.ndarray:
        frames = batch.frames[:, :, ::4, ::4]                                   # (B, L, H/4, W/4, 3) uint8
        colour = frames.mean(axis=(1, 2, 3), dtype=np.float64) / 255.0          # (B, 3)
        last = batch.frames[:, -1].astype(np.float64)
        motion = np.abs(batch.next_frames.astype(np.float64) - last).mean(axis=(1, 2, 3)) / 255.0
        motion = np.where(batch.has_next, motion, 0.0)
        return np.concatenate([colour, motion[:, None]], axis=1).astype(np.float32)


@register_stream("soak_rms")
class SoakRMS(Extractor):
    dim = 1
    inputs = ("audio",)
    audio_window = 15360

    def settings(self) -> dict:
        return {"soak": "rms"}

    def __call__(self, batch: SnippetBatch) -> np.ndarray:
        audio = batch.audio_centred(self.audio_window).astype(np.float64)       # (B, 15360)
        return np.sqrt((audio ** 2).mean(axis=1, keepdims=True)).astype(np.float32)
