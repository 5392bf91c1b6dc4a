"""``manifest.jsonl``: one JSON object per video and attempt; the last line of a ``video_id`` wins.

Crash safety (docs/robustness.md):

- feature files are written under a temporary name, fsync'ed and renamed into place; a video's
  manifest line is appended, flushed and fsync'ed only after all of its files exist;
- a line records the sha256 of each of its files (``streams[name]["sha256"]``) and the source
  it was made from (``source_file``: absolute path, size, mtime, optionally the content's
  sha256), so a resumed run can tell a line whose files or video changed since it was written;
- a torn line (a crash or a full disk mid-append) is skipped by every reader with one warning,
  and the next append starts on a fresh line;
- files are created with mode ``0o666`` minus the umask, like any other program's output;
- every write failure (disk full, read-only filesystem, no permission, OUT below a plain file)
  is one :class:`OutputError` line; the temporary file is removed and no line is written.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import IO, Iterable, Iterator

import numpy as np

from ..core.errors import BadInput
from ..core.fsio import replace_atomic, sha256_of

MANIFEST_NAME = "manifest.jsonl"
log = logging.getLogger(__name__)


class OutputError(BadInput):
    """An output file cannot be written (disk full, read-only, no permission, ...): one line."""


def output_error(path: str | os.PathLike, error: OSError) -> OutputError:
    """The one line of a failed write: which file, and the system's reason."""
    return OutputError(f"cannot write {path}: {error.strerror or error}")


def config_hash(grid, settings) -> str:
    """Hash of the snippet grid (a :class:`~clipae.core.grid.SnippetGrid`) and every stream's settings
    ``{stream: settings}`` (which hold its ``weights_id`` and decode settings): equal hashes, equal numbers.
    Extraction and feature import both stamp their lines with it, so their lines compare."""
    blob = json.dumps({"grid": grid.as_dict(), "streams": dict(settings)}, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def rehash(record: dict, grid) -> dict:
    """``record`` with ``config_hash`` recomputed from its streams' settings (after streams were added)."""
    record["config_hash"] = config_hash(grid, {n: e.get("settings", {}) for n, e in record["streams"].items()})
    return record


# --------------------------------------------------------------------------- reading

class ManifestError(BadInput, ValueError):
    """A file that is not a manifest (one line naming the file and line)."""


def iter_lines(path: str | os.PathLike) -> Iterator[dict]:
    """Every complete record of a manifest, in file order.

    A torn line (no final newline: an interrupted append) and a line that is not one JSON
    object with a ``video_id`` (a torn line an older version appended to) are skipped; one
    warning per call says how many and where.
    """
    skipped: list[int] = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            if not raw.endswith(b"\n"):  # the last line, torn
                skipped.append(number)
                break
            try:
                rec = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                skipped.append(number)
                continue
            if not isinstance(rec, dict) or not isinstance(rec.get("video_id"), str):
                skipped.append(number)
                continue
            yield rec
    if skipped:
        shown = ", ".join(map(str, skipped[:5])) + (", ..." if len(skipped) > 5 else "")
        log.warning(f"warning: {path}: skipped {len(skipped)} incomplete or unreadable line(s) (line {shown}), "
                    "left by an interrupted write")


def read_manifest(path: str | os.PathLike) -> dict[str, dict]:
    """``{video_id: record}`` with the last line of each video winning (insertion order kept)."""
    records: dict[str, dict] = {}
    for rec in iter_lines(path):
        records.pop(rec["video_id"], None)
        records[rec["video_id"]] = rec
    return records


# --------------------------------------------------------------------------- writing

def _encode(record: dict) -> bytes:
    return (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")


def append_record(path: str | os.PathLike, record: dict) -> None:
    """Append one line and make it durable before returning.

    After a torn last line the new line starts on a line of its own, so the torn one costs
    only itself. Raises :class:`OutputError`.
    """
    line = _encode(record)
    try:
        with open(path, "a+b") as f:
            if f.seek(0, os.SEEK_END) > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = b"\n" + line
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise output_error(path, e) from None


def _replace_atomic(path: Path, write) -> None:
    """:func:`~clipae.core.fsio.replace_atomic`, its failure one :class:`OutputError` line."""
    try:
        replace_atomic(path, write)
    except OSError as e:
        raise output_error(path, e) from None


def write_records(path: str | os.PathLike, records: Iterable[dict]) -> None:
    """Atomically replace ``path`` with these records (used to merge rank shards)."""
    records = list(records)
    _replace_atomic(Path(path), lambda f: f.writelines(_encode(rec) for rec in records))


class _HashingWriter:
    """A binary file that hashes what is written through it."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.hash = f, hashlib.sha256()

    def write(self, data) -> int:
        self.hash.update(data)
        return self.f.write(data)


def save_array_atomic(path: str | os.PathLike, array: np.ndarray) -> str:
    """Write a ``.npy`` under a temporary name in the same folder, fsync, then rename.

    Returns the sha256 of the file's bytes (what :func:`file_matches_digest` checks).
    Raises :class:`OutputError`.
    """
    digest = {}

    def write(f):
        w = _HashingWriter(f)
        np.save(w, np.ascontiguousarray(array), allow_pickle=False)
        digest["sha256"] = w.hash.hexdigest()

    _replace_atomic(Path(path), write)
    return digest["sha256"]


def file_matches_digest(path: str | os.PathLike, sha256: str | None) -> bool:
    """Whether the file at ``path`` holds exactly the bytes whose sha256 a line recorded."""
    if not sha256:
        return False
    try:
        return sha256_of(path) == sha256
    except OSError:
        return False


def remove_partial_files(folder: str | os.PathLike, name: str = "*") -> None:
    """Temporary files of ``name`` (a glob) left in ``folder`` by a run that was killed while writing."""
    for tmp in Path(folder).glob(f".{name}.*tmp"):
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise output_error(tmp, e) from None


# --------------------------------------------------------------------------- sources

def source_binding(path: str | os.PathLike, content_hash: bool = False) -> dict | None:
    """``{"path", "size", "mtime_ns"[, "sha256"]}`` of a source file, or None if it cannot be read."""
    try:
        st = os.stat(path)
        binding = {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        if content_hash:
            binding["sha256"] = sha256_of(path)
    except OSError:
        return None
    return binding


def same_source(recorded: dict | None, current: dict | None) -> bool:
    """Whether a line's ``source_file`` names the file seen now: same path and size, and the
    same content hash when both have one, else the same mtime."""
    if not isinstance(recorded, dict) or current is None:
        return False
    if recorded.get("path") != current["path"] or recorded.get("size") != current["size"]:
        return False
    if recorded.get("sha256") and current.get("sha256"):
        return recorded["sha256"] == current["sha256"]
    return recorded.get("mtime_ns") == current["mtime_ns"]


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
        try:
            shard.unlink()
        except OSError as e:
            raise output_error(shard, e) from None
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
