"""Node identities as small integers, so sets of them are bit masks.

A peer list of a thousand names is one integer: unions, differences and counts
are a few machine words per name instead of a hash set per peer. One table per
node (a simulator may share one among its nodes: it only interns names).

Names come and go (pods get new addresses): the owner of a table forgets the
names no mask of its holds any more (:meth:`NameTable.retain`), and their
indices are used again, lowest first, so masks stay as short as the names in use.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator


class NameTable:
    """Identity <-> index, plus the latest name text to dial (``name@host:port``)."""

    __slots__ = ("_by_dial", "_dial", "_free", "_idents", "_index")

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self._idents: list[str] = []  # "" where an index is free
        self._dial: list[str] = []
        self._by_dial: dict[str, int] = {}  # dial text -> index: a peer list's names, unparsed
        self._free: list[int] = []  # a heap of free indices

    def index(self, ident: str, dial: str | None = None) -> int:
        """The index of ``ident``; ``dial`` (with a port hint) replaces the name to dial."""
        i = self._index.get(ident)
        if i is None:
            dial = dial or ident
            if self._free:
                i = heapq.heappop(self._free)
                self._idents[i] = ident
                self._dial[i] = dial
            else:
                i = len(self._idents)
                self._idents.append(ident)
                self._dial.append(dial)
            self._index[ident] = i
            self._by_dial[dial] = i
        elif dial is not None and dial != ident and dial != self._dial[i]:
            self._by_dial.pop(self._dial[i], None)
            self._dial[i] = dial
            self._by_dial[dial] = i
        return i

    def known_dial(self, dial: str) -> int | None:
        """The index of the name whose latest dial text is ``dial`` (no parsing needed)."""
        return self._by_dial.get(dial)

    def find(self, ident: str) -> int | None:
        """The index of ``ident`` if it has one (never adds it)."""
        return self._index.get(ident)

    def retain(self, keep: int) -> int:
        """Forget every name whose bit is not in ``keep``; how many were forgotten.
        Their indices are given to new names, so no mask may hold them any more."""
        gone = [(ident, i) for ident, i in self._index.items() if not keep >> i & 1]
        for ident, i in gone:
            del self._index[ident]
            self._by_dial.pop(self._dial[i], None)
            self._idents[i] = self._dial[i] = ""
        while self._idents and not self._idents[-1]:  # shrink from the end
            self._idents.pop()
            self._dial.pop()
        if gone:
            self._free = [i for i, ident in enumerate(self._idents) if not ident]
            heapq.heapify(self._free)
        return len(gone)

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
        return len(self._index)


def indices(mask: int) -> Iterator[int]:
    """The set bits of ``mask``, lowest first."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low
