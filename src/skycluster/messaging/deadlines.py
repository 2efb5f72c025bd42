"""The timeouts of the calls waiting on one event loop, kept by one timer.

A timer per call costs more than the rest of a call's bookkeeping (on uvloop a
libuv timer started and stopped, and one more poll of the loop per call). Here a
call pushes its deadline on a heap and a single timer waits for the earliest.
Calls that finish are not taken out of the heap (that would cost a search): the
timer skips them when it fires, and the heap is rebuilt from the calls still
waiting whenever finished ones make up most of it, so it stays small.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from typing import Any

from skycluster.errors import CallTimeout

# (deadline, sequence, future, mailbox, node, timeout): the sequence keeps futures
# out of comparisons between equal deadlines.
_Entry = tuple[float, int, "asyncio.Future[Any]", str, str, float]


class Deadlines:
    """Expires the futures of calls on ``loop`` (used from that loop's thread only)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._heap: list[_Entry] = []
        self._seq = 0
        self._waiting = 0  # calls added and not finished yet
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def add(
        self, deadline: float, future: asyncio.Future[Any], name: str, ident: str, timeout: float
    ) -> None:
        """``future`` fails with CallTimeout at ``deadline`` (loop time) unless it is
        done by then; the caller calls :meth:`finished` once it is."""
        self._seq += 1
        heap = self._heap
        heapq.heappush(heap, (deadline, self._seq, future, name, ident, timeout))
        self._waiting += 1
        if len(heap) > 2 * self._waiting + 64:
            heap[:] = [entry for entry in heap if not entry[2].done()]
            heapq.heapify(heap)
        if deadline < self._timer_at:
            self._arm(deadline)

    def finished(self) -> None:
        self._waiting -= 1

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        now = self.loop.time()
        heap = self._heap
        while heap and (heap[0][0] <= now or heap[0][2].done()):
            _, _, future, name, ident, timeout = heapq.heappop(heap)
            expire(future, name, ident, timeout)
        if heap:
            self._arm(heap[0][0])

    def cancel(self) -> None:
        """Stop the timer (the node stops; its calls have failed already)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = math.inf
        self._heap.clear()


def expire(future: asyncio.Future[Any], name: str, ident: str, timeout: float) -> None:
    """A call to mailbox ``name`` on node ``ident`` had no reply within ``timeout``."""
    if not future.done():
        future.set_exception(
            CallTimeout(f"no reply from mailbox {name!r} on {ident} within {timeout} s")
        )
