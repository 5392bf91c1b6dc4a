"""``.npy`` files that may hold object arrays, read without running code from them.

Public W-TALC files (annotation folders, the joint I3D feature array) are object arrays, which
NumPy stores as a pickle: ``np.load(..., allow_pickle=True)`` on a crafted file runs whatever the
pickle names (``os.system`` included). :func:`load_npy` reads them with an unpickler that
resolves only what a plain object array needs -- NumPy's array reconstruction, ``ndarray``,
``dtype`` and NumPy scalars -- so a file holds nothing but arrays, strings, bytes, numbers and
lists / tuples / dicts of those. Anything else is refused with :class:`UnsafeFileError`
before it is created. Arrays without objects are read with ``allow_pickle=False``.
"""
from __future__ import annotations

import os
import pickle

import numpy as np

from .errors import BadInput

#: ``(module, name)`` globals an object-array pickle may name, under NumPy 1 and NumPy 2 names
_ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
_NUMPY_CORE = np._core if hasattr(np, "_core") else np.core
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_module, "_reconstruct")] = _NUMPY_CORE.multiarray._reconstruct
    _ALLOWED[(_module, "scalar")] = _NUMPY_CORE.multiarray.scalar
for _kind in {type(np.dtype(c)) for c in "?bhilqBHILQefdgFDGSUO"}:
    _ALLOWED[("numpy.dtypes", _kind.__name__)] = _kind


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` for the one use Python 2 pickles make of it (text back to bytes)."""
    if not isinstance(text, str) or encoding != "latin1":
        raise UnsafeFileError("_codecs.encode called with other than (str, 'latin1')")
    return text.encode("latin1")


_ALLOWED[("_codecs", "encode")] = _latin1  # how Python 2 pickles of byte strings arrive


class UnsafeFileError(BadInput, ValueError):
    """The file names something other than arrays, strings and numbers (one line)."""


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeFileError(f"it names {module}.{name}, which is not a numpy array, string or number; "
                                  "refused (nothing was run)") from None

    def persistent_load(self, pid):
        raise UnsafeFileError("it holds a persistent reference; refused (nothing was run)")


def load_npy(path: str | os.PathLike, encoding: str = "ASCII") -> np.ndarray:
    """The array in ``path`` (an ``.npy`` file), object arrays included.

    encoding: how Python 2 byte strings in the pickle are read (``"bytes"`` keeps them as bytes,
              ``"latin1"`` is what NumPy arrays written by Python 2 need)
    Raises :class:`UnsafeFileError` for a pickle naming anything else, ``ValueError`` for a file
    that is not an ``.npy`` array, ``OSError`` for one that cannot be read.
    """
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        except ValueError as e:
            raise ValueError(f"not a .npy file ({e})") from None
        if not dtype.hasobject:
            f.seek(0)
            return np.load(f, allow_pickle=False)
        try:
            array = _ArraysOnly(f, encoding=encoding).load()
        except UnsafeFileError:
            raise
        except Exception as e:  # a truncated or corrupt pickle
            raise ValueError(f"corrupt object array ({type(e).__name__}: {e})") from None
    if not isinstance(array, np.ndarray):
        raise UnsafeFileError(f"it holds a {type(array).__name__}, not an array")
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"the header says shape {shape} but the data is {array.shape}")
    return array
