"""Pretrained checkpoints described as data, downloaded once and checked by sha256.

Each extractor declares a :class:`WeightsSpec` (file name, URL, sha256, key format). The file is
looked up in this order:

1. ``--weights NAME=PATH``: that local file, whatever its name; its sha256 is recorded.
2. ``--random-weights``: no file at all; the manifest records ``"random"``.
3. ``<weights-dir>/<file name>`` (default ``~/.cache/clipae/weights``), downloaded on first use
   and verified against the spec's sha256. Offline or on a failed download the run stops with
   one :class:`WeightsError` line naming the file, its URL and the ``--weights`` option.

Some public checkpoints are published with only the first hex digits of their sha256 in the
file name (the torch.hub convention, e.g. ``vggish-10086976.pth``); a spec may then carry that
prefix, and verification checks the prefix.

Some released files are not plain tensor state dicts but dicts of NumPy arrays (the torchvggish
PCA parameters); ``load_checkpoint(path, numpy_arrays=True)`` reads those with
``weights_only=True`` too, allowing only the reconstruction of plain numeric NumPy arrays.

Checkpoints committed to a git repository without a published sha256 carry the file's git blob id instead (``git ls-tree`` shows it), which is a
digest of the content as well. A spec with neither is accepted with a loud warning and its
sha256 is recorded as seen.

A checkpoint's digests are computed once and remembered in ``<cache>/digests.json``
(:func:`weights_digests`), keyed by the file's device and inode and checked against its size and modification time:
hashing the VGGish and CLIP files at every start took longer than loading them. A file written
again gets a new modification time and is hashed again.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import BadInput
from .fsio import CACHE_DIR, digests, write_json_atomic

DEFAULT_WEIGHTS_DIR = CACHE_DIR / "weights"


class WeightsError(BadInput, RuntimeError):
    """A checkpoint cannot be found, downloaded, verified or loaded (one line, no traceback)."""


@dataclass(frozen=True)
class WeightsSpec:
    stream: str      # the stream name used by ``--weights NAME=PATH``
    filename: str
    url: str
    sha256: str      # full hex digest, or the published prefix (>= 8 hex digits); "" if none is published
    key_format: str  # which key names the file uses (documented by the loader)
    #: how a user passes the file by hand, named in every error; ``--weights <stream>=PATH`` if empty
    option: str = ""
    git_blob_sha1: str = ""  # the file's git blob id where it is committed to a repository

    def by_hand(self, path: str | os.PathLike = "PATH") -> str:
        """The command-line option that passes this file by hand, e.g. ``--weights vggish=PATH``."""
        return f"{self.option} {path}" if self.option else f"--weights {self.stream}={path}"


@dataclass(frozen=True)
class ResolvedWeights:
    path: Path | None  # None for random weights
    identity: str      # "sha256:<hex>" or "random"


class UnverifiedWeightsWarning(UserWarning):
    """A checkpoint was used whose spec publishes no digest to check it against."""


#: where :func:`weights_digests` remembers the digests of checkpoint files (JSON)
DIGEST_CACHE = CACHE_DIR / "digests.json"


def _stamp(path: Path) -> tuple[str, list[int]]:
    """A file's key in :data:`DIGEST_CACHE` (device and inode, which a rename keeps) and the
    size and modification time its digests hold for."""
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}", [st.st_size, st.st_mtime_ns]


def _read_digest_cache() -> dict:
    try:
        cache = json.loads(DIGEST_CACHE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def weights_digests(path: str | os.PathLike) -> tuple[str, str]:
    """``(sha256, git blob sha1)`` of a checkpoint file, from :data:`DIGEST_CACHE` when the file
    still has the size and modification time it was hashed with, else hashed and remembered (the
    cache is best effort: one that cannot be read or written is ignored)."""
    p = Path(path).resolve()
    key, stamp = _stamp(p)
    hit = _read_digest_cache().get(key)
    if isinstance(hit, dict) and hit.get("stat") == stamp and all(
            isinstance(hit.get(k), str) for k in ("sha256", "git_blob_sha1")):
        return hit["sha256"], hit["git_blob_sha1"]
    sha256, blob = digests(p)
    if _stamp(p) == (key, stamp):      # not rewritten while it was read
        cache = _read_digest_cache()
        cache[key] = {"stat": stamp, "sha256": sha256, "git_blob_sha1": blob, "path": str(p)}
        with contextlib.suppress(OSError):
            write_json_atomic(DIGEST_CACHE, cache, indent=1)
    return sha256, blob


def verify_file(spec: WeightsSpec, path: str | os.PathLike) -> str:
    """The file's sha256 after checking it against the spec's digest, or a :class:`WeightsError`
    naming what was expected. A spec without any digest warns loudly and records what it saw."""
    sha256, blob = weights_digests(path)
    if spec.sha256:
        if not sha256.startswith(spec.sha256):
            raise WeightsError(f"{path} has sha256 {sha256}, expected {spec.sha256}…")
    elif spec.git_blob_sha1:
        if blob != spec.git_blob_sha1:
            raise WeightsError(f"{path} has git blob id {blob}, expected {spec.git_blob_sha1}")
    else:
        warnings.warn(f"{spec.filename}: no digest is published for {spec.url}; using {path} unverified "
                      f"(sha256 {sha256}, recorded in the manifest)", UnverifiedWeightsWarning, stacklevel=2)
    return sha256


def _download(spec: WeightsSpec, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    hint = f"download it by hand and pass {spec.by_hand(dest)}"
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{spec.filename}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(spec.url, timeout=60) as resp:
            shutil.copyfileobj(resp, out, length=1 << 20)
        try:
            verify_file(spec, tmp)
        except WeightsError as e:
            raise WeightsError(f"{spec.filename} from {spec.url}: {e}; {hint}") from None
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise WeightsError(f"cannot download {spec.filename} from {spec.url} ({e}); {hint}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def resolve_weights(spec: WeightsSpec, path: str | None = None, random: bool = False,
                    weights_dir: str | os.PathLike | None = None, download: bool = True) -> ResolvedWeights:
    """Find the checkpoint for ``spec`` (see the module docstring for the order)."""
    if path is not None:
        if random:
            raise WeightsError(f"--weights {spec.stream}=... and --random-weights contradict each other")
        p = Path(path).expanduser()
        if not p.is_file():
            raise WeightsError(f"{spec.by_hand(path)}: no such file")
        return ResolvedWeights(p, "sha256:" + weights_digests(p)[0])
    if random:
        return ResolvedWeights(None, "random")
    dest = Path(weights_dir or DEFAULT_WEIGHTS_DIR).expanduser() / spec.filename
    if not dest.is_file():
        if not download:
            raise WeightsError(f"{spec.filename} is not in {dest.parent}; get it from {spec.url} "
                               f"and pass {spec.by_hand()}, or use --random-weights")
        _download(spec, dest)
    try:
        digest = verify_file(spec, dest)
    except WeightsError as e:
        raise WeightsError(f"{e}; delete it to download again from {spec.url}, or pass {spec.by_hand()}") from None
    return ResolvedWeights(dest, "sha256:" + digest)


@contextlib.contextmanager
def seeded_random_init(seed: int = 0):
    """Build ``--random-weights`` networks inside this block: the same random weights on every
    run (so a resumed extraction matches an uninterrupted one), without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _numpy_array_globals() -> list:
    """What unpickling a plain NumPy array needs, under the module names of NumPy 1 and 2."""
    reconstruct = np._core.multiarray._reconstruct if hasattr(np, "_core") else np.core.multiarray._reconstruct
    dtype_classes = {type(np.dtype(c)) for c in "?bhilqBHILQefdg"}
    return [np.ndarray, np.dtype, *dtype_classes,
            (reconstruct, "numpy.core.multiarray._reconstruct"),
            (reconstruct, "numpy._core.multiarray._reconstruct")]


def load_checkpoint(path: str | os.PathLike, numpy_arrays: bool = False) -> dict:
    """A state dict, loaded with ``weights_only=True`` (no pickled code runs).

    ``numpy_arrays=True`` also accepts values pickled as NumPy arrays of numbers (no object
    arrays) and returns them as tensors. A file in the zip format of ``torch.save`` is memory-mapped
    (its tensors are read where the caller copies them, not first into a buffer of their own: 0.03
    against 0.24 s for VGGish's 275 MB on the CPU); the legacy format is read whole.
    """
    allowed = _numpy_array_globals() if numpy_arrays else []
    try:
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as e:  # torch raises many types for a corrupt or foreign file
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        why = next((line for line in lines if "WeightsUnpickler error" in line), lines[0] if lines else "")
        raise WeightsError(f"cannot load {path} as a PyTorch checkpoint: {type(e).__name__}: {why}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state dict")
    if numpy_arrays:
        obj = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in obj.items()}
    return obj


def load_state_strict(name: str, model: torch.nn.Module, state: dict) -> None:
    """Load ``state`` into ``model`` after :func:`check_keys` against the model's own keys and
    shapes. BatchNorm ``num_batches_tracked`` counters only count training steps: checkpoints
    written before PyTorch 0.4 lack them, so they are neither required nor read."""
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    check_keys(name, state, expected)
    model.load_state_dict(state, strict=False)  # strict=False only for the step counters


def check_keys(name: str, state: dict, expected: dict[str, tuple[int, ...]]) -> None:
    """Every expected key present with its shape and no key left over, or one clear error."""
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    bad = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k]))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if extra:
        problems.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
    if bad:
        k = bad[0]
        problems.append(f"{len(bad)} of wrong shape (e.g. {k}: {tuple(state[k].shape)} != {tuple(expected[k])})")
    if problems:
        raise WeightsError(f"{name} checkpoint does not match: " + "; ".join(problems))
