"""Python types for the Erlang terms that have no natural Python counterpart.

The mapping of every term to Python and back is the table in ``docs/erlang.md``.
All of these are immutable and hashable, so that they may be map keys.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from skycluster.erlang.atom import Atom


@dataclass(frozen=True, slots=True)
class Pid:
    """A process identifier (``NEW_PID_EXT``): ``<id.serial>`` on ``node``."""

    node: Atom
    id: int
    serial: int
    creation: int


@dataclass(frozen=True, slots=True)
class Reference:
    """A reference (``NEWER_REFERENCE_EXT``): up to 5 32-bit words on ``node``."""

    node: Atom
    creation: int
    ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Port:
    """A port identifier (``NEW_PORT_EXT``, or ``V4_PORT_EXT`` for 64-bit ids)."""

    node: Atom
    id: int
    creation: int


@dataclass(frozen=True, slots=True)
class OpaqueFun:
    """A fun or an export (``fun m:f/a``), kept as its encoded bytes (tag included):
    Python cannot run it, but can hold it and send it back unchanged."""

    raw: bytes

    @property
    def is_export(self) -> bool:
        return self.raw[:1] == b"q"


@dataclass(frozen=True, slots=True)
class BitBinary:
    """A bitstring whose length is not a whole number of bytes: the last byte holds
    ``bits`` (1 to 7) significant bits, the high ones; the others are zero."""

    data: bytes
    bits: int

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 7:
            raise ValueError(f"a bit binary's last byte holds 1 to 7 bits, not {self.bits}")
        if not self.data:
            raise ValueError("a bit binary has at least one byte")
        if self.data[-1] & ((1 << (8 - self.bits)) - 1):
            raise ValueError("a bit binary's unused low bits in its last byte must be zero")


@dataclass(frozen=True, slots=True)
class ImproperList:
    """A list whose tail is not ``[]``: ``[a, b | tail]`` is
    ``ImproperList((a, b), tail)``. Erlang sends one as the tag of a call's alias."""

    items: tuple[Any, ...]
    tail: Any

    def __post_init__(self) -> None:
        if not self.items:
            raise ValueError("an improper list has at least one element before its tail")
        if isinstance(self.tail, list | FrozenList):
            raise ValueError("an improper list's tail is not a list (that would be a proper list)")
        if isinstance(self.tail, ImproperList):
            raise ValueError("an improper list's tail is not an improper list: join their items")


class FrozenList(tuple[Any, ...]):
    """A list used as a map key (a Python list is not hashable). Encodes as a list;
    equals only another ``FrozenList`` (never a tuple, which is a different term)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is FrozenList and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((FrozenList, tuple(self)))

    def __repr__(self) -> str:
        return f"FrozenList({list(self)!r})"


class FrozenMap(Mapping[Any, Any]):
    """A map used as a map key (a Python dict is not hashable). Encodes as a map."""

    __slots__ = ("_hash", "_items")

    def __init__(self, items: Mapping[Any, Any]) -> None:
        self._items = dict(items)
        self._hash: int | None = None

    def __getitem__(self, key: Any) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return type(other) is FrozenMap and self._items == other._items

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash((FrozenMap, frozenset(self._items.items())))
        return self._hash

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"
