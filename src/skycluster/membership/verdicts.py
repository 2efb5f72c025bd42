"""Heartbeat verdicts and ticks, for every link of a node, from one timer.

Any frame received proves the peer alive; silence longer than the timeout means
it is down. A link that sent nothing for an interval gets a tick (one small
frame, one way), so an idle link costs one frame per interval each way and a
busy one none. Deadlines sit in a heap: a pass handles the links that are due,
not every link.

Local health (Lifeguard's idea): when the node measures that its own loop ran
late, the silence it saw is partly its own doing (frames waited unread in the
socket), so it gives every peer the benefit of the lag for a timeout's length.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


class LinkClock:
    """When a link last received and sent a frame; the driver updates both."""

    __slots__ = ("alive", "hidden", "ident", "last_received", "last_sent", "link", "paused")

    def __init__(self, link: int, ident: str, now: float, *, hidden: bool = False) -> None:
        self.link = link
        self.ident = ident
        self.hidden = hidden
        self.last_received = now
        self.last_sent = now
        self.paused = False  # we stopped reading it: its bytes wait for us
        self.alive = True

    def heard(self, now: float) -> None:
        self.last_received = now

    def sent(self, now: float) -> None:
        self.last_sent = now


@dataclass(slots=True)
class Due:
    """What a pass found: links silent too long (with their silence) and idle ones."""

    silent: list[tuple[LinkClock, float]] = field(default_factory=list)
    idle: list[LinkClock] = field(default_factory=list)


class Heartbeats:
    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self.clocks: dict[int, LinkClock] = {}
        self._heap: list[tuple[float, int]] = []  # (when to look, link)
        self._credit = 0.0  # extra silence forgiven: the lag this node measured
        self._credit_until = 0.0

    def add(self, clock: LinkClock) -> None:
        self.clocks[clock.link] = clock
        heapq.heappush(self._heap, (clock.last_sent + self.interval, clock.link))

    def remove(self, link: int) -> LinkClock | None:
        clock = self.clocks.pop(link, None)
        if clock is not None:
            clock.alive = False  # its heap entry is dropped when it comes up
        return clock

    def lagged(self, now: float, lag: float) -> None:
        """The loop woke ``lag`` seconds late: forgive that much more silence for a
        timeout's length, until the frames that waited have been read."""
        if now >= self._credit_until:
            self._credit = 0.0
        self._credit = max(self._credit, lag)
        self._credit_until = now + self.timeout + lag

    def allowance(self, now: float) -> float:
        """Silence allowed before a verdict, now."""
        return self.timeout + (self._credit if now < self._credit_until else 0.0)

    def due(self, now: float) -> Due:
        found = Due()
        heap = self._heap
        allowed = self.allowance(now)
        while heap and heap[0][0] <= now:
            _, link = heapq.heappop(heap)
            clock = self.clocks.get(link)
            if clock is None:
                continue
            if clock.paused:
                clock.last_received = now
            silence = now - clock.last_received
            if silence > allowed:
                found.silent.append((clock, silence))
                continue  # the caller removes it
            tick_at = clock.last_sent + self.interval
            if tick_at <= now:
                found.idle.append(clock)
                clock.last_sent = now
                tick_at = now + self.interval
            # a hair past the verdict time, so that the next look finds it due
            verdict_at = clock.last_received + allowed + 1e-6
            heapq.heappush(heap, (max(min(verdict_at, tick_at), now + 1e-6), link))
        return found

    def next_due(self) -> float | None:
        heap = self._heap
        while heap and heap[0][1] not in self.clocks:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    @property
    def entries(self) -> int:
        """Heap entries, stale ones included (one per link, plus removed ones)."""
        return len(self._heap)

    def __len__(self) -> int:
        return len(self.clocks)
