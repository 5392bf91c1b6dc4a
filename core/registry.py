"""The one way a swappable part is found by name: a :class:`Registry`.

Streams, flow methods, decoders, annotation readers, clustering methods and embeddings, cluster
mappings, NMS variants and feature layouts are each a ``Registry``; a new part is one decorated
definition (``@STREAMS.register("name")``) or one :meth:`Registry.add`, never an ``if``/``elif``::

    NMS = Registry("NMS")

    @NMS.register("soft")
    def soft_nms(...): ...

A registry reads like a ``dict`` (``NMS["soft"]``, ``"soft" in NMS``, ``list(NMS)`` in the order
of registration); an unknown name is one :class:`UnknownName` line listing the known ones.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Generic, TypeVar

from .errors import BadInput

T = TypeVar("T")


class UnknownName(BadInput, KeyError, ValueError):
    """A name no part is registered under (one line naming the known ones); a ``KeyError`` and a
    ``ValueError`` too, as a lookup and as a bad setting."""

    def __str__(self) -> str:   # KeyError would quote the message
        return str(self.args[0])


class Registry(MutableMapping, Generic[T]):
    """Named parts of one kind. ``load`` (optional) is called once before the first lookup, to import
    the modules whose definitions register themselves. With ``named``, a registered class gets
    its name as the ``name`` attribute. ``REGISTRY[name] = part`` replaces a part on purpose
    (a test's stand-in); :meth:`add` refuses a second, different part under a taken name."""

    def __init__(self, kind: str, load: Callable[[], None] | None = None, named: bool = False) -> None:
        self.kind = kind
        self._parts: dict[str, T] = {}
        self._load = load
        self._named = named

    def add(self, name: str, part: T) -> T:
        """Register ``part`` as ``name``; a different part under a taken name is an error."""
        if name in self._parts and self._parts[name] is not part:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        if self._named:
            part.name = name
        self._parts[name] = part
        return part

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda part: self.add(name, part)

    def _loaded(self) -> dict[str, T]:
        if self._load is not None:
            load, self._load = self._load, None
            load()
        return self._parts

    def __getitem__(self, name: str) -> T:
        parts = self._loaded()
        try:
            return parts[name]
        except KeyError:
            raise UnknownName(f"unknown {self.kind} {name!r}; known: {', '.join(parts) or 'none'}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())

    def __contains__(self, name: object) -> bool:
        return name in self._loaded()

    def __setitem__(self, name: str, part: T) -> None:
        self._parts[name] = part

    def __delitem__(self, name: str) -> None:
        del self._parts[name]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._parts)})"
