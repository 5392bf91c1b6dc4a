"""The unit decoding hands to the feature streams: consecutive snippets of one video."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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

    def rows(self, start: int, stop: int) -> "SnippetBatch":
        """Snippets ``start:stop`` of this batch (views, no copy)."""
        return SnippetBatch(**{f: None if v is None else v[start:stop] for f, v in vars(self).items()})

    @staticmethod
    def concat(parts: "list[SnippetBatch]") -> "SnippetBatch":
        """One batch of the snippets of ``parts`` in order (a view of ``parts[0]`` if it is the only one).

        Every part must carry the same fields with the same per-snippet shapes (frames of one
        size, audio windows of one length); the parts may come from different videos.
        """
        if len(parts) == 1:
            return parts[0]
        fields = {}
        for f in vars(parts[0]):
            values = [getattr(p, f) for p in parts]
            if any((v is None) != (values[0] is None) for v in values):
                raise ValueError(f"cannot join snippet batches: {f} is missing in some of them")
            fields[f] = None if values[0] is None else np.concatenate(values)
        return SnippetBatch(**fields)

    def audio_centred(self, samples: int) -> np.ndarray:
        """The middle ``samples`` of each audio window, ``(B, samples)``.

        Windows are cut for the longest ``audio_window`` among the requested streams; a stream
        with a shorter window takes their centre with this, so it stays centred on the snippet.
        """
        if self.audio is None:
            raise ValueError("this batch carries no audio")
        start = (self.audio.shape[1] - samples) // 2
        if start < 0:
            raise ValueError(f"audio windows hold {self.audio.shape[1]} samples, fewer than {samples}")
        return self.audio[:, start:start + samples]
