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


def mean_colour(frames: np.ndarray) -> np.ndarray:
    """``(B, L, H, W, 3)`` uint8 → ``(B, 3)`` float64: the mean R, G, B of every 4th pixel, 0..1."""
    return frames[:, :, ::4, ::4].mean(axis=(1, 2, 3), dtype=np.float64) / 255.0


def motion(batch: SnippetBatch) -> np.ndarray:
    """``(B,)`` float64: mean absolute difference of each snippet's last frame and the next one (0 at the end)."""
    last = batch.frames[:, -1].astype(np.float64)
    change = np.abs(batch.next_frames.astype(np.float64) - last).mean(axis=(1, 2, 3)) / 255.0
    return np.where(batch.has_next, change, 0.0)


def rms(audio: np.ndarray) -> np.ndarray:
    """``(B, S)`` → ``(B, 1)`` float32 root mean square."""
    audio = audio.astype(np.float64)
    return np.sqrt((audio ** 2).mean(axis=1, keepdims=True)).astype(np.float32)


@register_stream("soak_colour")
class SoakColour(Extractor):
    dim = 4
    inputs = ("frames",)

    def settings(self) -> dict:
        return {"soak": "colour"}

    def __call__(self, batch: SnippetBatch) -> np.ndarray:
        return np.concatenate([mean_colour(batch.frames), motion(batch)[:, None]], axis=1).astype(np.float32)


@register_stream("soak_rms")
class SoakRMS(Extractor):
    dim = 1
    inputs = ("audio",)
    audio_window = 15360

    def settings(self) -> dict:
        return {"soak": "rms"}

    def __call__(self, batch: SnippetBatch) -> np.ndarray:
        return rms(batch.audio_centred(self.audio_window))                     # (B, 15360) → (B, 1)
