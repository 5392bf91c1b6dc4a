"""The VGGish log-mel front end, batched in torch.

The same numbers as the reference NumPy code of the AudioSet release (``mel_features.py`` and
``vggish_input.py`` in tensorflow/models ``research/audioset/vggish``, copied unchanged into
harritaylor/torchvggish):

* 16 kHz mono; frames of 25 ms (400 samples) every 10 ms (160 samples), no padding;
* a *periodic* Hann window ``0.5 - 0.5 cos(2 pi n / 400)``;
* magnitude of a 512-point real FFT (the next power of two above 400): 257 bins;
* 64 mel bands from 125 to 7500 Hz: triangles that are linear in HTK mel
  (``1127 ln(1 + f / 700)``), whose edges are 66 points evenly spaced in mel, applied to the
  FFT bins placed evenly on ``[0, 8000]`` Hz, with the DC bin's weight set to zero;
* ``log(mel + 0.01)``;
* examples of 96 frames x 64 bands.

The reference computes in float64; so does :class:`LogMel` (the patches are cast to float32
for the network only afterwards).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 400      # round(16000 * 0.025)
HOP_SAMPLES = 160         # round(16000 * 0.010)
FFT_LENGTH = 512          # 2 ** ceil(log2(400))
NUM_BANDS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
PATCH_FRAMES = 96         # one VGGish example: 96 frames of 10 ms = 0.96 s
#: samples read by one example: its 96 frames of 400 samples, 160 apart (0.975 s)
PATCH_SAMPLES = WINDOW_SAMPLES + (PATCH_FRAMES - 1) * HOP_SAMPLES


def hertz_to_mel(hz: np.ndarray | float) -> np.ndarray | float:
    """HTK mel scale, ``1127 ln(1 + f / 700)``."""
    return 1127.0 * np.log(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def periodic_hann(n: int) -> np.ndarray:
    """``(n,)`` float64 Hann window of period ``n`` (the last zero of the symmetric one dropped)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def mel_weights(num_bands: int = NUM_BANDS, num_bins: int = FFT_LENGTH // 2 + 1,
                sample_rate: int = SAMPLE_RATE, low_hz: float = MEL_MIN_HZ,
                high_hz: float = MEL_MAX_HZ) -> np.ndarray:
    """``(num_bins, num_bands)`` float64 matrix M with ``mel = magnitude @ M``.

    Band ``j`` is a triangle over mel edges ``e[j] < e[j+1] < e[j+2]`` (``e`` = ``num_bands + 2``
    points evenly spaced in mel between ``low_hz`` and ``high_hz``), rising and falling linearly
    in mel; bin ``k`` sits at ``k * (sample_rate / 2) / (num_bins - 1)`` Hz. The DC bin gets no
    weight (as in HTK).
    """
    if not 0.0 <= low_hz < high_hz <= sample_rate / 2:
        raise ValueError(f"mel bands need 0 <= low < high <= Nyquist, got {low_hz}, {high_hz}")
    bins_mel = hertz_to_mel(np.linspace(0.0, sample_rate / 2, num_bins))[:, None]      # (K, 1)
    edges = np.linspace(hertz_to_mel(low_hz), hertz_to_mel(high_hz), num_bands + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]                           # (J,)
    rising = (bins_mel - lower) / (centre - lower)
    falling = (upper - bins_mel) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))                              # (K, J)
    weights[0, :] = 0.0
    return weights


class LogMel(nn.Module):
    """Waveforms to log-mel spectrograms.

    forward: ``(B, S)`` float 16 kHz samples → ``(B, F, 64)`` float64 with
    ``F = 1 + (S - 400) // 160`` frames (frame ``f`` reads samples ``[160 f, 160 f + 400)``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.from_numpy(periodic_hann(WINDOW_SAMPLES)), persistent=False)
        self.register_buffer("mel", torch.from_numpy(mel_weights()), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.ndim != 2 or audio.shape[1] < WINDOW_SAMPLES:
            raise ValueError(f"expected (B, S>={WINDOW_SAMPLES}) audio, got {tuple(audio.shape)}")
        frames = audio.to(self.window).unfold(1, WINDOW_SAMPLES, HOP_SAMPLES)     # (B, F, 400)
        magnitude = torch.fft.rfft(frames * self.window, n=FFT_LENGTH).abs()       # (B, F, 257)
        return torch.log(magnitude @ self.mel + LOG_OFFSET)                         # (B, F, 64)

