"""Busy waiting (skycluster.distribution.busywait): after traffic the loop polls, not sleeps."""

from __future__ import annotations

import asyncio
import selectors
from typing import Any

from skycluster.distribution.busypolicy import AFTER_READ, BusyPolicy
from skycluster.distribution.busywait import BusyWait


class Uncontended(BusyPolicy):
    """A policy that never finds the core contended (a loaded test machine may be)."""

    def check(self, now: float, cpu: float, preempted: int) -> bool:
        return True


class RecordingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Records the timeout of every poll: 0 is a poll, anything else a sleep."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []

    def select(self, timeout: float | None = None) -> Any:
        self.timeouts.append(timeout)
        return super().select(timeout)


def test_quick_traffic_makes_the_loop_poll_until_the_window_passes_then_sleep() -> None:
    selector = RecordingSelector()
    loop = asyncio.SelectorEventLoop(selector)

    async def main() -> None:
        busy = BusyWait(loop, 0.02, policy=Uncontended(0.02))
        busy.poke(AFTER_READ)  # the first frame in a long while: no reason to poll yet
        assert not busy.spinning
        await asyncio.sleep(0.01)
        assert selector.timeouts.count(0) <= 3, selector.timeouts  # idle: it sleeps
        selector.timeouts.clear()
        busy.poke(AFTER_READ)  # 10 ms later: polling 15 ms would have caught it
        assert busy.spinning
        busy.poke(AFTER_READ)  # traffic while polling extends the window; no second poller
        await asyncio.sleep(0.06)
        polls = [t for t in selector.timeouts if t == 0]
        assert len(polls) >= 20, selector.timeouts[:50]
        assert not busy.spinning
        selector.timeouts.clear()
        await asyncio.sleep(0.05)
        assert any(t is None or t >= 0.01 for t in selector.timeouts)  # then it sleeps

        busy.close()
        busy.poke(AFTER_READ)  # a stopped node's last writes start nothing
        assert not busy.spinning

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def test_a_contended_core_ends_the_polling() -> None:
    loop = asyncio.new_event_loop()

    class Contended(BusyPolicy):
        def check(self, now: float, cpu: float, preempted: int) -> bool:
            self.until = now
            return False

    async def main() -> None:
        busy = BusyWait(loop, 0.01, policy=Contended(0.01))
        busy.poke(AFTER_READ)
        await asyncio.sleep(0.005)
        busy.poke(AFTER_READ)
        assert busy.spinning
        await asyncio.sleep(0.005)  # the first check (after 1 ms of polling) stops it
        assert not busy.spinning

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def test_close_while_polling_leaves_nothing_scheduled() -> None:
    loop = asyncio.new_event_loop()

    async def main() -> None:
        busy = BusyWait(loop, 0.01, policy=Uncontended(0.01))
        busy.poke(AFTER_READ)
        await asyncio.sleep(0.005)
        busy.poke(AFTER_READ)
        assert busy.spinning
        busy.close()
        assert not busy.spinning
        await asyncio.sleep(0)
        assert not [h for h in loop._ready if not h.cancelled()]  # type: ignore[attr-defined]

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
