"""Network batches that cross video boundaries, so short videos fill a batch together.

ActivityNet videos are often a few dozen snippets long, THUMOS's validation clips too: cut
video by video, every video ends with a part-filled batch and the networks run far below their
batch size. :func:`pack` reads the snippet batches of many videos in order and re-cuts them
into batches of exactly ``batch_size`` snippets (the last one excepted), the rows of one video
after those of the previous one. Each :class:`Packed` batch says which rows belong to which
video, so the caller can split the network's output back.

Only videos of one *group* share a batch: the same streams to extract, frames of the same size
(videos of another aspect ratio are resized to another width), and audio on all or on none.
A change of group sends the pending rows on as a batch of their own.

A video whose decoding fails part-way is reported with :class:`VideoFailed`; its rows still
waiting for a batch are dropped, so the other videos are not touched.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Iterable, Iterator, Protocol

from .batch import SnippetBatch
from .snippets import VideoFacts


class Source(Protocol):
    """What :func:`pack` reads: a video's facts, then its batches (``close`` is always called)."""

    def facts(self) -> VideoFacts: ...
    def __iter__(self) -> Iterator[SnippetBatch]: ...
    def close(self) -> None: ...


@dataclass
class VideoOpened:
    key: Hashable
    facts: VideoFacts


@dataclass
class Packed:
    """``batch``: the snippets of ``parts = [(key, rows), ...]``, one video after the other."""

    batch: SnippetBatch
    parts: list[tuple[Hashable, int]]


@dataclass
class VideoDecoded:
    """Every row of video ``key`` is in an earlier :class:`Packed` or in the next ones."""

    key: Hashable


@dataclass
class VideoFailed:
    key: Hashable
    error: BaseException


Event = VideoOpened | Packed | VideoDecoded | VideoFailed


def _shape_key(batch: SnippetBatch) -> tuple:
    frames = None if batch.frames is None else batch.frames.shape[2:]
    audio = None if batch.audio is None else batch.audio.shape[1:]
    return frames, audio


def pack(videos: Iterable[tuple[Hashable, Hashable, Source]], batch_size: int) -> Iterator[Event]:
    """Events of ``videos = [(key, group, source), ...]`` read in order (see the module docstring).

    Sources are opened by the caller (the iterator may open the next one only when asked) and
    closed here once read. Events come in order: a video's :class:`VideoOpened`, then the
    :class:`Packed` batches with its rows, its :class:`VideoDecoded` once its last batch was
    read (its last rows may still be pending), or a :class:`VideoFailed` at any point.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    pending: list[tuple[Hashable, SnippetBatch]] = []
    pending_group = None
    count = 0

    def flush() -> Packed:
        nonlocal pending, count
        parts: list[tuple[Hashable, int]] = []
        for k, b in pending:  # one part per video
            if parts and parts[-1][0] == k:
                parts[-1] = (k, parts[-1][1] + len(b))
            else:
                parts.append((k, len(b)))
        packed = Packed(SnippetBatch.concat([b for _, b in pending]), parts)
        pending, count = [], 0
        return packed

    for key, group, source in videos:
        try:
            facts = source.facts()
            yield VideoOpened(key, facts)
            for batch in source:
                batch_group = (group, _shape_key(batch))
                if pending and batch_group != pending_group:
                    yield flush()
                pending_group = batch_group
                start = 0
                while start < len(batch):
                    take = min(len(batch) - start, batch_size - count)
                    pending.append((key, batch.rows(start, start + take)))
                    count += take
                    start += take
                    if count == batch_size:
                        yield flush()
        except Exception as e:  # this video's decoding failed: its own error, the others go on
            kept = [(k, b) for k, b in pending if k != key]
            pending, count = kept, sum(len(b) for _, b in kept)
            yield VideoFailed(key, e)
            continue
        finally:
            source.close()
        yield VideoDecoded(key)
    if pending:
        yield flush()
