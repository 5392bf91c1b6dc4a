"""Files: the cache folder, atomic writes, file digests, and finding videos.

Every output clipae writes goes through :func:`replace_atomic`: the bytes go into a temporary file
beside the target (created with mode ``0o666`` minus the umask, like any program's output), are
fsync'ed and renamed over the target, so a crash leaves the old file or the new one, never half.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import IO, Callable

#: clipae's cache: downloaded weights, logs (``$CLIPAE_CACHE`` overrides)
CACHE_DIR = Path(os.environ.get("CLIPAE_CACHE", Path.home() / ".cache" / "clipae"))

#: file suffixes searched for as videos (lower case)
VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".flv", ".wmv", ".mpg", ".mpeg",
                            ".3gp", ".ts", ".mts", ".m2ts", ".ogv", ".vob"})


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of a file."""
    return digests(path, chunk)[0]


def digests(path: str | os.PathLike, chunk: int = 1 << 20) -> tuple[str, str]:
    """(sha256, git blob sha1) of a file, in one read."""
    h = hashlib.sha256()
    g = hashlib.sha1(b"blob %d\0" % os.path.getsize(path))
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
            g.update(block)
    return h.hexdigest(), g.hexdigest()


def video_files(folder: str | os.PathLike) -> list[Path]:
    """Every video file under ``folder`` (recursively, by suffix), sorted by path."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())


def new_temp(path: Path) -> tuple[IO[bytes], Path]:
    """A new, empty binary file beside ``path`` (``.<name>.<random>.tmp``), mode 0o666 minus the
    umask (``tempfile.mkstemp`` would always make it 0o600)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        return os.fdopen(fd, "wb"), tmp


def replace_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """``write(f)`` into a temporary binary file beside ``path``, fsync, rename over ``path``.

    The parent folder is created; on any error the temporary file is removed and the
    ``OSError`` (or the writer's exception) propagates with ``path`` untouched.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f, tmp = new_temp(path)
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """``text`` (UTF-8) into ``path``, atomically."""
    replace_atomic(path, lambda f: f.write(text.encode("utf-8")))


def write_json_atomic(path: str | os.PathLike, obj, **dumps) -> None:
    """``json.dumps(obj, **dumps)`` into ``path``, atomically."""
    write_text_atomic(path, json.dumps(obj, **dumps))

