"""Mesh completion: dial the nodes our peers are linked to and we are not.

Each target has a retry record: when it may be dialled next, and its own backoff.
A failed dial waits longer each time (up to a maximum, with jitter); a link that
goes down soon after it came up (a flap) also waits longer each time, so a
triangle that cannot be closed (A reaches C, B reaches C, A cannot reach B) costs
a dial every ``retry_max`` seconds, not a storm. A record is dropped once no live
peer lists the target any more, or once its link has been stable for a while.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from skycluster._backoff import Backoff


@dataclass(slots=True)
class Retry:
    backoff: Backoff
    due: float = 0.0  # not dialled by the mesh before this time
    linked_since: float | None = None  # set while a link to it is up


class Mesh:
    def __init__(
        self,
        initial: float,
        maximum: float,
        stable_after: float,
        random: Callable[[], float],
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.stable_after = stable_after
        self.random = random
        self.retries: dict[str, Retry] = {}

    def _record(self, ident: str) -> Retry:
        retry = self.retries.get(ident)
        if retry is None:
            backoff = Backoff(self.initial, self.maximum, jitter=0.25, random=self.random)
            retry = self.retries[ident] = Retry(backoff)
        return retry

    def may_dial(self, ident: str, now: float) -> bool:
        retry = self.retries.get(ident)
        return retry is None or (retry.linked_since is None and now >= retry.due)

    def dialling(self, ident: str) -> None:
        """A mesh dial starts: from now on the target has a record."""
        self._record(ident)

    def failed(self, ident: str, now: float) -> None:
        """The dial failed: wait from now (a dial may take its whole timeout to fail)."""
        retry = self._record(ident)
        retry.due = now + retry.backoff.next()

    def linked(self, ident: str, now: float) -> None:
        retry = self.retries.get(ident)
        if retry is not None:
            retry.linked_since = now

    def unlinked(self, ident: str, now: float, hold: float, lasted: float) -> float:
        """The link went down after ``lasted`` seconds: wait ``hold`` at least (peers
        still list it until they hear), longer each time when the link was short-lived
        (a flap). Returns the wait."""
        retry = self._record(ident)
        retry.linked_since = None
        if lasted >= self.stable_after:
            retry.backoff.reset()
        wait = max(hold, retry.backoff.next())
        retry.due = now + wait
        return wait

    def forget(self, ident: str) -> None:
        self.retries.pop(ident, None)

    def prune(self, now: float, listed: Callable[[str], bool]) -> None:
        """Drop records of targets no live peer lists (unless linked) and of links
        stable for long enough."""
        for ident, retry in list(self.retries.items()):
            if retry.linked_since is None:
                if not listed(ident):
                    del self.retries[ident]
            elif now - retry.linked_since >= self.stable_after:
                del self.retries[ident]

    def backing_off(self) -> int:
        """Targets waiting after a failure (shown by /status)."""
        return sum(
            1 for r in self.retries.values() if r.linked_since is None and r.backoff.attempts
        )
