"""The tensors of a TorchScript archive (``torch.jit.save``), read without running any of its code.

``torch.jit.load`` compiles the archive's ``code/`` and runs it (a class's ``__setstate__``
runs at load), so a downloaded or passed-by-hand ``.pt`` could do anything. This reader
takes only data from the zip archive:

- ``<archive>/data.pkl`` goes through a restricted unpickler that rebuilds tensors, their
  storages (``<archive>/data/<key>``, little-endian) and ordered dicts, and turns every
  TorchScript class (``__torch__.*``) into an inert record of its attributes; any other global
  (``os.system``, ``builtins.eval``, ...) is refused;
- which attributes are parameters and buffers is read from the ``__parameters__`` and
  ``__buffers__`` lists of each class in ``code/``, parsed as text (``ast``), never executed.

:func:`read_state_dict` returns what ``torch.jit.load(path).state_dict()`` would, as a plain
``{dotted name: tensor}`` dict on the CPU.
"""
from __future__ import annotations

import ast
import os
import pickle
import zipfile
from pathlib import PurePosixPath

import torch

from ..core.errors import BadInput

#: storage classes as TorchScript names them, and their element types
STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class TorchScriptError(BadInput, ValueError):
    """An archive that is not a plain TorchScript module of tensors (one line)."""


def is_torchscript(path: str | os.PathLike) -> bool:
    """A zip archive with a ``constants.pkl`` beside its ``data.pkl``: what ``torch.jit.save`` writes."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(PurePosixPath(n).name == "constants.pkl" for n in z.namelist())


class ScriptObject:
    """An instance of a TorchScript class, as data: its class name and the state it was saved with."""

    qualname = "__torch__"

    def __init__(self) -> None:
        self.state = None

    def __setstate__(self, state) -> None:  # pickle's BUILD: keep the state, run nothing
        self.state = state


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, requires_grad=False, hooks=None,
                    metadata=None) -> torch.Tensor:
    """A tensor viewing a storage (``storage`` is its flat ``(numel,)`` tensor)."""
    if all(s > 0 for s in size) and offset + sum((s - 1) * st for s, st in zip(size, stride)) >= storage.numel():
        raise TorchScriptError(f"a tensor of size {tuple(size)} reaches past its storage of {storage.numel()} elements")
    return torch.as_strided(storage, tuple(size), tuple(stride), offset)


def _identity(value, *_):
    return value


#: the only functions ``data.pkl`` may call, by (module, name); each is ours, not the archive's
_CALLABLES = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("collections", "OrderedDict"): dict,
    ("torch.jit._pickle", "build_intlist"): list,
    ("torch.jit._pickle", "build_doublelist"): list,
    ("torch.jit._pickle", "build_boollist"): list,
    ("torch.jit._pickle", "build_tensorlist"): list,
    ("torch.jit._pickle", "restore_type_tag"): _identity,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(file)
        self.archive, self.prefix = archive, prefix
        self.classes: dict[str, type] = {}

    def find_class(self, module: str, name: str):
        if module == "__torch__" or module.startswith("__torch__."):
            qualname = f"{module}.{name}"
            if qualname not in self.classes:
                self.classes[qualname] = type(name, (ScriptObject,), {"qualname": qualname})
            return self.classes[qualname]
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        if (module, name) in _CALLABLES:
            return _CALLABLES[(module, name)]
        raise TorchScriptError(f"data.pkl asks for {module}.{name}, which a module of tensors never needs")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise TorchScriptError(f"data.pkl refers to {pid!r}, not to a tensor storage")
        _, dtype, key, _location, numel = pid
        try:
            raw = self.archive.read(f"{self.prefix}data/{key}")
        except KeyError:
            raise TorchScriptError(f"storage {key} is missing from the archive") from None
        itemsize = torch.empty((), dtype=dtype).element_size()
        if len(raw) != numel * itemsize:
            raise TorchScriptError(f"storage {key} holds {len(raw)} bytes, not {numel} x {itemsize}")
        return torch.frombuffer(bytearray(raw), dtype=dtype) if numel else torch.empty(0, dtype=dtype)


def _declared(archive: zipfile.ZipFile, prefix: str) -> dict[str, set[str]]:
    """``{class qualname: names of its parameters and buffers}`` from the archive's ``code/``."""
    out: dict[str, set[str]] = {}
    for name in archive.namelist():
        if not (name.startswith(prefix + "code/") and name.endswith(".py")):
            continue
        module = name[len(prefix + "code/"):-len(".py")].replace("/", ".")
        try:
            tree = ast.parse(archive.read(name).decode("utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            raise TorchScriptError(f"{name} is not readable TorchScript code") from None
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            names: set[str] = set()
            for stmt in cls.body:
                if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                        and stmt.targets[0].id in ("__parameters__", "__buffers__")
                        and isinstance(stmt.value, (ast.List, ast.Tuple))):
                    names |= {e.value for e in stmt.value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
            out[f"{module}.{cls.name}"] = names
    return out


def _collect(obj: ScriptObject, declared: dict[str, set[str]], prefix: str, out: dict[str, torch.Tensor]) -> None:
    if not isinstance(obj.state, dict):
        raise TorchScriptError(f"{obj.qualname} was saved through its own __getstate__ (its __setstate__ would have "
                               "to run to rebuild it); not a plain module of tensors")
    if obj.qualname not in declared:
        raise TorchScriptError(f"the archive has no code declaring the parameters of {obj.qualname}")
    names = declared[obj.qualname]
    for key, value in obj.state.items():
        if isinstance(value, ScriptObject):
            _collect(value, declared, f"{prefix}{key}.", out)
        elif key in names and isinstance(value, torch.Tensor):
            out[prefix + key] = value


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``{dotted name: tensor}`` of every parameter and buffer of a TorchScript module archive.

    Raises :class:`TorchScriptError` for anything else (a non-tensor global in ``data.pkl``, a
    class rebuilt by its own ``__setstate__``, a big-endian or inconsistent archive).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            pkls = [n for n in archive.namelist() if PurePosixPath(n).name == "data.pkl" and n.count("/") <= 1]
            if len(pkls) != 1:
                raise TorchScriptError("not a TorchScript archive (no single data.pkl)")
            prefix = pkls[0][:-len("data.pkl")]
            order = archive.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in archive.namelist() \
                else "little"
            if order != "little":
                raise TorchScriptError(f"the archive's tensors are {order}-endian")
            with archive.open(pkls[0]) as f:
                root = _Unpickler(f, archive, prefix).load()
            if not isinstance(root, ScriptObject):
                raise TorchScriptError(f"data.pkl holds a {type(root).__name__}, not a TorchScript module")
            out: dict[str, torch.Tensor] = {}
            _collect(root, _declared(archive, prefix), "", out)
            return out
    except TorchScriptError:
        raise
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, RuntimeError,
            OSError) as e:
        raise TorchScriptError(f"cannot read the archive: {type(e).__name__}: {e}") from None
