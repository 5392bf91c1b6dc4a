"""Frames of the sample videos and snippet batches built from them, for the extractor tests."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from clipae.extractors.base import SnippetBatch

VIDEOS = Path(__file__).resolve().parent / "data" / "videos"


def decode_frames(n: int, short_side: int = 256, video: str = "v_GGSY1Qvo990.mp4") -> np.ndarray:
    """The first ``n`` frames, short side resized: (n, short_side, W, 3) uint8 RGB."""
    frames = []
    with av.open(str(VIDEOS / video)) as container:
        stream = container.streams.video[0]
        scale = short_side / min(stream.width, stream.height)
        width, height = round(stream.width * scale), round(stream.height * scale)
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24", width=width, height=height))
            if len(frames) == n:
                break
    return np.stack(frames)


def snippet_batch(frames: np.ndarray, length: int) -> SnippetBatch:
    """Consecutive non-overlapping snippets of ``length`` frames cut from ``frames`` (N, H, W, 3);
    a snippet's next frame is real where ``frames`` goes on after it, else its own final frame."""
    b = len(frames) // length
    after = np.arange(1, b + 1) * length
    return SnippetBatch(index=np.arange(b), frames=frames[:b * length].reshape(b, length, *frames.shape[1:]),
                        next_frames=frames[np.minimum(after, len(frames)) - 1 + (after < len(frames))],
                        has_next=after < len(frames))
