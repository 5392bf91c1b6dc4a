"""``manifest.jsonl``: one JSON object per video and attempt; the last line of a ``video_id`` wins.

Crash safety (DESIGN.md): feature files are written under a temporary name and renamed into
place; a video's manifest line is appended, flushed and fsync'ed only after all of its files
exist, so no line ever points at a missing or partial file.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

MANIFEST_NAME = "manifest.jsonl"


class ManifestError(ValueError):
    """A file that is not a manifest (one line naming the file and line)."""


def iter_lines(path: str | os.PathLike) -> Iterator[dict]:
    """Every complete record of a manifest; a torn last line (a crash mid-write) is ignored.
    A complete line that is not a JSON object with a ``video_id`` is a :class:`ManifestError`."""
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith("\n"):
                break  # partial line of an interrupted append
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{path}:{number}: not a manifest line ({e.msg})") from None
            if not isinstance(record, dict) or "video_id" not in record:
                raise ManifestError(f"{path}:{number}: not a manifest line (no video_id)")
            yield record


def read_manifest(path: str | os.PathLike) -> dict[str, dict]:
    """``{video_id: record}`` with the last line of each video winning (insertion order kept)."""
    records: dict[str, dict] = {}
    for rec in iter_lines(path):
        records.pop(rec["video_id"], None)
        records[rec["video_id"]] = rec
    return records


def append_record(path: str | os.PathLike, record: dict) -> None:
    """Append one line and make it durable before returning."""
    line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def write_records(path: str | os.PathLike, records: Iterable[dict]) -> None:
    """Atomically replace ``path`` with these records (used to merge rank shards)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_array_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a ``.npy`` under a temporary name in the same folder, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".npy.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def stream_path(manifest_path: str | os.PathLike, record: dict, stream: str) -> Path:
    """Absolute path of a stream's feature file (paths in the manifest are relative to it)."""
    try:
        rel = record["streams"][stream]["path"]
    except KeyError:
        raise KeyError(f"video {record.get('video_id')!r} has no {stream!r} stream in {manifest_path}") from None
    return Path(manifest_path).parent / rel


def load_stream(manifest_path: str | os.PathLike, record: dict, stream: str, mmap: bool = True) -> np.ndarray:
    """A stream's ``(num_snippets, dim)`` array, memory-mapped by default."""
    return np.load(stream_path(manifest_path, record, stream), mmap_mode="r" if mmap else None, allow_pickle=False)


# --------------------------------------------------------------------------- several writers

def shard_path(out_dir: str | os.PathLike, rank: int) -> Path:
    """The manifest shard a rank writes under ``torchrun`` (merged into ``manifest.jsonl`` at the end)."""
    return Path(out_dir) / f"manifest.rank{rank}.jsonl"


def merge_shards(out_dir: str | os.PathLike) -> int:
    """Append every ``manifest.rank<k>.jsonl`` to ``manifest.jsonl`` (rank order) and delete them.

    The new manifest replaces the old one atomically before any shard is deleted, so a crash
    at any point loses nothing (at worst a shard's lines are merged twice, which changes no
    video's last line). Returns the number of lines merged.
    """
    out_dir = Path(out_dir)
    shards = sorted(out_dir.glob("manifest.rank*.jsonl"), key=lambda p: int(p.stem.split("rank")[-1]))
    if not shards:
        return 0
    main = out_dir / MANIFEST_NAME
    records = list(iter_lines(main)) if main.exists() else []
    merged = [rec for shard in shards for rec in iter_lines(shard)]
    write_records(main, records + merged)
    for shard in shards:
        shard.unlink()
    return len(merged)


def last_records(path: str | os.PathLike) -> tuple[dict[str, dict], dict[str, dict]]:
    """``({video_id: last line}, {video_id: last ok line})`` of a manifest (empty if absent)."""
    last: dict[str, dict] = {}
    last_ok: dict[str, dict] = {}
    if Path(path).exists():
        for rec in iter_lines(path):
            last[rec["video_id"]] = rec
            if rec.get("status") == "ok":
                last_ok[rec["video_id"]] = rec
    return last, last_ok
