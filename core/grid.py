"""The snippet grid shared by every stream (DESIGN.md, "Snippet grid").

Frames are resampled to ``fps``. Snippet ``i`` covers resampled frames
``[i*stride, i*stride + length)``; the last partial snippet is kept and padded by
repeating the final frame, so ``num_snippets = ceil(max(num_frames - length, 0) / stride) + 1``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: slack of the frame count: a duration a hair above ``k / fps`` (container rounding) still gives ``k`` frames
FRAME_SLACK = 1e-6


def frames_in(duration_s: float, fps: float) -> int:
    """Frames resampled to ``fps`` in ``duration_s`` seconds (frame ``k`` at ``k / fps``; at least one)."""
    return max(1, math.ceil(duration_s * fps - FRAME_SLACK))


@dataclass(frozen=True)
class SnippetGrid:
    fps: float = 25.0
    length: int = 16
    stride: int = 16

    def __post_init__(self) -> None:
        if not (self.fps > 0 and self.length >= 1 and self.stride >= 1):
            raise ValueError(f"invalid snippet grid: fps={self.fps}, length={self.length}, stride={self.stride}")

    def num_snippets(self, num_frames: int) -> int:
        """Rows per stream for a video of ``num_frames`` resampled frames (at least 1 frame)."""
        if num_frames < 1:
            raise ValueError("a video needs at least one frame")
        return math.ceil(max(num_frames - self.length, 0) / self.stride) + 1

    def num_frames(self, duration_s: float) -> int:
        """Resampled frames in ``duration_s`` seconds (:func:`frames_in`)."""
        return frames_in(duration_s, self.fps)

    def frame_range(self, i: int) -> tuple[int, int]:
        """Resampled frame indices ``[start, end)`` of snippet ``i`` (end may pass the video's end)."""
        return i * self.stride, i * self.stride + self.length

    def start_s(self, i) -> np.ndarray | float:
        return np.asarray(i) * self.stride / self.fps if not isinstance(i, int) else i * self.stride / self.fps

    def end_s(self, i) -> np.ndarray | float:
        return (np.asarray(i) * self.stride + self.length) / self.fps if not isinstance(i, int) else (i * self.stride + self.length) / self.fps

    def centre_s(self, i) -> np.ndarray | float:
        return (np.asarray(i) * self.stride + self.length / 2) / self.fps if not isinstance(i, int) else (i * self.stride + self.length / 2) / self.fps

    def snippet_at(self, t_s: float) -> int:
        """Index of the snippet whose stride-cell contains time ``t_s`` (seconds)."""
        return max(0, int(math.floor(t_s * self.fps / self.stride)))

    def as_dict(self) -> dict:
        return {"fps": self.fps, "snippet_length": self.length, "snippet_stride": self.stride}

    @classmethod
    def from_record(cls, record: dict) -> "SnippetGrid":
        """The grid of a manifest line or a run's ``extraction.json`` (``fps``, ``snippet_length``,
        ``snippet_stride``); a ``KeyError`` naming the first one missing."""
        return cls(float(record["fps"]), int(record["snippet_length"]), int(record["snippet_stride"]))
