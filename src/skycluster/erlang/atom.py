"""Erlang atoms as a small immutable Python type.

An atom is compared and hashed by its text, never interned in a global table:
Erlang's own atom table is never garbage collected, and a Python node must not
inherit that weakness (a peer that sends millions of distinct atoms would grow it
without bound). Decoding keeps a bounded cache of recent atoms (see
``terms.py``), so common atoms are shared and memory stays bounded.
"""

from __future__ import annotations

from typing import Final

MAX_ATOM_CHARS: Final = 255  # Erlang's limit, in characters (not bytes)


class Atom:
    """An Erlang atom: ``Atom("ok")``. Immutable, hashable, equal by name.

    An atom never equals a ``str`` (in Erlang ``ok`` and ``"ok"`` differ), so the
    two may be keys of one dict.
    """

    __slots__ = ("_name",)
    _name: str

    def __init__(self, name: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"an atom's name is a str, not {type(name).__name__}")
        if len(name) > MAX_ATOM_CHARS:
            raise ValueError(f"an atom has at most {MAX_ATOM_CHARS} characters, not {len(name)}")
        object.__setattr__(self, "_name", name)

    @property
    def name(self) -> str:
        return self._name

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("atoms are immutable")

    def __delattr__(self, key: str) -> None:
        raise AttributeError("atoms are immutable")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Atom):
            return self._name == other._name
        return NotImplemented

    def __hash__(self) -> int:
        return hash((Atom, self._name))

    def __repr__(self) -> str:
        return f"Atom({self._name!r})"

    def __str__(self) -> str:
        return self._name

    def __reduce__(self) -> tuple[type[Atom], tuple[str]]:
        return (Atom, (self._name,))
