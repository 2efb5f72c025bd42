"""Heartbeat verdicts and ticks, for every link of a node, from one timer.

Any frame received proves the peer alive; silence longer than the timeout means
it is down. A link that sent nothing for a while (half an interval by default) gets a
tick (one small frame, one way), so an idle link costs one frame per interval
each way and a busy one none. Deadlines sit in a heap: a pass handles the links that are due,
not every link.

Ticks go out on a grid, at the instants when ``now - phase`` is a multiple of
the interval. The driver takes the phase from the wall clock, so every node of a
cluster ticks at the same moment: a node's peers' ticks then arrive together
and are read in a few wake-ups, not one wake-up per peer, and the node's own
ticks go out in one. An idle node's cost is its frames, not its wake-ups. A
frame sent shortly before a grid instant spares the tick at that instant, so a
link's frames are at most an interval and that while apart: half an interval,
or less when the timeout is short (never more than half way to the timeout).

Local health (Lifeguard's idea): when the node measures that its own loop ran
late, the silence it saw is partly its own doing (frames waited unread in the
socket), so it gives every peer the benefit of the lag until the frames that
waited have been read (one interval).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Protocol

EARLY = 0.002  # a timer may fire this early (loops round to milliseconds): due already


def next_instant(after: float, phase: float, period: float) -> float:
    """The first instant of the grid ``phase + k * period`` later than ``after``."""
    return phase + (math.floor((after - phase) / period) + 1) * period


class Clock(Protocol):
    """When a link last received and sent a frame (the driver stamps both), and
    whether its reading is paused (its bytes wait for us: silence is not death).
    The node's links are clocks themselves; the simulator uses :class:`LinkClock`."""

    last_received: float
    last_sent: float
    reading_paused: bool


class LinkClock:
    __slots__ = ("last_received", "last_sent", "reading_paused")

    def __init__(self, now: float) -> None:
        self.last_received = now
        self.last_sent = now
        self.reading_paused = False


@dataclass(slots=True)
class Due:
    """What a pass found: links silent too long (with their silence) and idle ones."""

    silent: list[tuple[int, float]] = field(default_factory=list)
    idle: list[int] = field(default_factory=list)


class Heartbeats:
    """The clocks of a node's links, by the driver's link number (never reused)."""

    def __init__(self, interval: float, timeout: float, phase: float = 0.0) -> None:
        self.interval = interval
        self.timeout = timeout
        self.phase = phase % interval
        self.spare = min(interval, timeout - interval) / 2  # see the module's docstring
        self.clocks: dict[int, Clock] = {}
        self._heap: list[tuple[float, int]] = []  # (when to look, link)
        self._credit = 0.0  # extra silence forgiven: the lag this node measured
        self._credit_until = 0.0

    def add(self, link: int, clock: Clock, now: float) -> None:
        clock.last_received = clock.last_sent = now
        self.clocks[link] = clock
        heapq.heappush(self._heap, (next_instant(now, self.phase, self.interval), link))

    def remove(self, link: int) -> None:
        self.clocks.pop(link, None)  # its heap entry is dropped when it comes up

    def lagged(self, now: float, lag: float) -> None:
        """The loop woke ``lag`` seconds late: forgive that much more silence for one
        interval, long enough to read the frames that waited (a live peer sends one
        at least every interval); then a link still silent is judged as usual."""
        if now >= self._credit_until:
            self._credit = 0.0
        self._credit = max(self._credit, lag)
        self._credit_until = now + self.interval

    def allowance(self, now: float) -> float:
        """Silence allowed before a verdict, now."""
        return self.timeout + (self._credit if now < self._credit_until else 0.0)

    def due(self, now: float) -> Due:
        found = Due()
        heap = self._heap
        allowed = self.allowance(now)
        clocks = self.clocks
        spare = self.spare
        horizon = now + EARLY
        tick_at = next_instant(horizon, self.phase, self.interval)
        while heap and heap[0][0] <= horizon:
            _, link = heapq.heappop(heap)
            clock = clocks.get(link)
            if clock is None:
                continue
            silence = now - clock.last_received
            # Asked only of a link that looks silent: the answer may cost a system
            # call (bytes waiting unread on a link another loop reads).
            if silence > allowed and clock.reading_paused:
                clock.last_received = now
                silence = 0.0
            if silence > allowed:
                found.silent.append((link, silence))
                continue  # the caller removes it
            if now - clock.last_sent >= spare:
                found.idle.append(link)
                clock.last_sent = now
            # a hair past the verdict time, so that the next look finds it due
            verdict_at = clock.last_received + allowed + 1e-6
            heapq.heappush(heap, (max(min(verdict_at, tick_at), horizon + 1e-6), link))
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
