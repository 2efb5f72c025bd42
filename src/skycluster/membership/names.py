"""Node identities as small integers, so sets of them are bit masks.

A peer list of a thousand names is one integer: unions, differences and counts
are a few machine words per name instead of a hash set per peer. One table per
node (a simulator may share one among its nodes: it only interns names).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class NameTable:
    """Identity <-> index, plus the latest name text to dial (``name@host:port``)."""

    __slots__ = ("_dial", "_idents", "_index")

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self._idents: list[str] = []
        self._dial: list[str] = []

    def index(self, ident: str, dial: str | None = None) -> int:
        """The index of ``ident``; ``dial`` (with a port hint) replaces the name to dial."""
        i = self._index.get(ident)
        if i is None:
            i = len(self._idents)
            self._index[ident] = i
            self._idents.append(ident)
            self._dial.append(dial or ident)
        elif dial is not None and dial != ident:
            self._dial[i] = dial
        return i

    def bit(self, ident: str) -> int:
        return 1 << self.index(ident)

    def ident(self, i: int) -> str:
        return self._idents[i]

    def dial_name(self, i: int) -> str:
        return self._dial[i]

    def mask(self, idents: Iterable[str]) -> int:
        m = 0
        for ident in idents:
            m |= 1 << self.index(ident)
        return m

    def idents(self, mask: int) -> list[str]:
        return [self._idents[i] for i in indices(mask)]

    def dial_names(self, mask: int) -> list[str]:
        return [self._dial[i] for i in indices(mask)]

    def __len__(self) -> int:
        return len(self._idents)


def indices(mask: int) -> Iterator[int]:
    """The set bits of ``mask``, lowest first."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low
