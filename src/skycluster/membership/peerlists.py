"""Who is linked to whom: this node's own list, versioned, and each peer's.

A node tells its peers which nodes it is linked to. A new link gets the whole
list once; afterwards every peer gets only the changes, batched once per mesh
period and numbered: a change says which version it applies to, so a lost or
reordered one is noticed and the receiver asks for the whole list again.
Lists are bit masks over a :class:`~skycluster.membership.names.NameTable`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PeerListUpdate:
    """``full``: ``added`` is the whole list at ``version``. Else the change from
    version ``base`` to ``version``."""

    version: int
    base: int
    full: bool
    added: int
    removed: int


class OwnList:
    """The nodes this node is linked to (visible ones), and the versions it told."""

    __slots__ = ("current", "told", "version")

    def __init__(self) -> None:
        self.current = 0  # mask of visible links now
        self.told = 0  # the list as of ``version``
        self.version = 0

    def snapshot(self) -> PeerListUpdate:
        return PeerListUpdate(self.version, self.version, True, self.told, 0)

    def commit(self) -> PeerListUpdate | None:
        """The change since the last commit, as the next version (None: no change)."""
        if self.current == self.told:
            return None
        added = self.current & ~self.told
        removed = self.told & ~self.current
        base = self.version
        self.version += 1
        self.told = self.current
        return PeerListUpdate(self.version, base, False, added, removed)


class ReceivedList:
    __slots__ = ("awaiting_full", "mask", "version")

    def __init__(self) -> None:
        self.mask = 0
        self.version = -1  # nothing received yet
        self.awaiting_full = False


class PeerLists:
    """The lists peers told us, and their union (the nodes some peer is linked to)."""

    def __init__(self) -> None:
        self.received: dict[str, ReceivedList] = {}
        self._union = 0
        self._dirty = False

    def add_peer(self, ident: str) -> None:
        self.received[ident] = ReceivedList()

    def remove_peer(self, ident: str) -> None:
        if self.received.pop(ident, None) is not None:
            self._dirty = True

    def apply(self, ident: str, update: PeerListUpdate) -> tuple[int, bool]:
        """Apply a peer's update: (names it newly lists, whether to ask for the whole
        list because a change does not follow the version we hold)."""
        got = self.received.get(ident)
        if got is None:
            return 0, False
        if update.full:
            new = update.added & ~got.mask
            if got.mask & ~update.added:
                self._dirty = True
            got.mask = update.added
            got.version = update.version
            got.awaiting_full = False
            self._union |= new
            return new, False
        if update.base != got.version:
            ask = not got.awaiting_full
            got.awaiting_full = True
            return 0, ask
        new = update.added & ~got.mask
        if update.removed & got.mask:
            self._dirty = True
        got.mask = (got.mask | update.added) & ~update.removed
        got.version = update.version
        self._union |= new
        return new, False

    def union(self) -> int:
        """Every node some live peer lists."""
        if self._dirty:
            union = 0
            for got in self.received.values():
                union |= got.mask
            self._union = union
            self._dirty = False
        return self._union

    def mask_of(self, ident: str) -> int:
        got = self.received.get(ident)
        return 0 if got is None else got.mask

    def unlinked_pairs(self, members: dict[str, int]) -> int:
        """Pairs of our peers (``members``: identity -> bit) that should be linked and
        are not, as their lists say: a pair counts when either side lacks the other."""
        everyone = 0
        for bit in members.values():
            everyone |= bit
        lacking = 0
        for ident, bit in members.items():
            got = self.received.get(ident)
            if got is None or got.version < 0:
                continue  # no list yet: nothing known
            missing = everyone & ~got.mask & ~bit
            lacking += missing.bit_count()
        # A pair missing from both lists is counted twice above (the two ends of a
        # link agree once both told): halve, rounding a one-sided pair up.
        return (lacking + 1) // 2
