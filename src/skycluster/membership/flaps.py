"""Peers whose links flap: every flap counted, the first one reported.

A link that goes down less than ``stable_after`` after it came up is a flap. The
mesh waits longer before each new dial (:mod:`mesh`); here each flapping peer is
remembered, so that its first flap is reported (the driver logs what to look at)
and the later ones only counted, until a link to it holds for ``stable_after``:
then the peer is reported steady and forgotten. Bounded: past ``limit`` peers,
the one whose last flap is oldest is forgotten.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class Flapping:
    flaps: int  # flaps in a row, since the peer was last steady
    first: float  # when the first of them happened
    last: float


class Flaps:
    def __init__(self, stable_after: float, limit: int) -> None:
        self.stable_after = stable_after
        self.limit = limit
        self._peers: OrderedDict[str, Flapping] = OrderedDict()  # oldest last flap first

    def went_down(self, ident: str, now: float, lasted: float) -> int:
        """A link to ``ident`` went down after ``lasted`` seconds: how many flaps in
        a row this one is (1: the first, to report), or 0 when it was no flap."""
        if lasted >= self.stable_after:
            self._peers.pop(ident, None)
            return 0
        record = self._peers.pop(ident, None)
        if record is None:
            record = Flapping(0, now, now)
        record.flaps += 1
        record.last = now
        self._peers[ident] = record
        while len(self._peers) > self.limit:
            self._peers.popitem(last=False)
        return record.flaps

    def steady(
        self, now: float, linked_since: Callable[[str], float | None]
    ) -> list[tuple[str, int]]:
        """Forget the flapping peers whose link has held ``stable_after``: (peer,
        flaps it had) of each."""
        if not self._peers:
            return []
        done = []
        for ident, record in list(self._peers.items()):
            since = linked_since(ident)
            if since is not None and now - since >= self.stable_after:
                del self._peers[ident]
                done.append((ident, record.flaps))
        return done

    def forget(self, ident: str) -> None:
        self._peers.pop(ident, None)

    def counts(self) -> dict[str, int]:
        """Flaps in a row of each peer flapping now."""
        return {ident: r.flaps for ident, r in self._peers.items()}

    def __contains__(self, ident: object) -> bool:
        return ident in self._peers

    def __len__(self) -> int:
        return len(self._peers)
