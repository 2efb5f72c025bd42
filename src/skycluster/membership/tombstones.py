"""Nodes a topology's strategy removed: the mesh does not link them again.

A strategy's view wins: once a topology disconnected a node, neither the mesh
(which learns names from peers' lists, possibly stale ones) nor a retry links
it again, and its handshakes are refused, until that topology lists the node
again. Bounded: past ``limit`` the oldest removal is forgotten.
"""

from __future__ import annotations

from collections import OrderedDict


class Tombstones:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._since: OrderedDict[tuple[str, str], float] = OrderedDict()  # (topology, ident)
        self._count: dict[str, int] = {}  # ident -> topologies that removed it

    def bury(self, topology: str, ident: str, now: float) -> None:
        key = (topology, ident)
        if key in self._since:
            self._since.move_to_end(key)
            self._since[key] = now
            return
        self._since[key] = now
        self._count[ident] = self._count.get(ident, 0) + 1
        while len(self._since) > self.limit:
            (_, oldest), _ = self._since.popitem(last=False)
            self._forget(oldest)

    def lift(self, topology: str, ident: str) -> bool:
        """The topology lists ``ident`` again; True when it had removed it."""
        if self._since.pop((topology, ident), None) is None:
            return False
        self._forget(ident)
        return True

    def _forget(self, ident: str) -> None:
        left = self._count[ident] - 1
        if left:
            self._count[ident] = left
        else:
            del self._count[ident]

    def __contains__(self, ident: object) -> bool:
        return ident in self._count

    def idents(self) -> list[str]:
        return list(self._count)

    def entries(self) -> list[tuple[str, str, float]]:
        """(topology, identity, since) of every removal remembered."""
        return [(t, i, since) for (t, i), since in self._since.items()]

    def __len__(self) -> int:
        return len(self._since)
