"""Busy waiting (skycluster.distribution.busywait): after traffic the loop polls, not sleeps."""

from __future__ import annotations

import asyncio
import selectors
from typing import Any

from skycluster.distribution.busywait import BusyWait


class RecordingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Records the timeout of every poll: 0 is a poll, anything else a sleep."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []

    def select(self, timeout: float | None = None) -> Any:
        self.timeouts.append(timeout)
        return super().select(timeout)


def test_a_poked_loop_polls_until_the_window_passes_then_sleeps() -> None:
    selector = RecordingSelector()
    loop = asyncio.SelectorEventLoop(selector)

    async def main() -> None:
        busy = BusyWait(loop, 0.02)
        await asyncio.sleep(0.01)
        assert selector.timeouts.count(0) <= 3, selector.timeouts  # idle: it sleeps
        selector.timeouts.clear()
        busy.poke()
        busy.poke()  # traffic while polling extends the window; no second poller
        assert busy.spinning
        await asyncio.sleep(0.06)
        polls = [t for t in selector.timeouts if t == 0]
        assert len(polls) >= 20, selector.timeouts[:50]
        assert any(t is not None and t >= 0.01 for t in selector.timeouts)  # then it slept
        assert not busy.spinning

        busy.close()
        busy.poke()  # a stopped node's last writes start nothing
        assert not busy.spinning

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def test_close_while_polling_leaves_nothing_scheduled() -> None:
    loop = asyncio.new_event_loop()

    async def main() -> None:
        busy = BusyWait(loop, 1.0)
        busy.poke()
        await asyncio.sleep(0.01)
        assert busy.spinning
        busy.close()
        assert not busy.spinning
        await asyncio.sleep(0)
        assert not [h for h in loop._ready if not h.cancelled()]  # type: ignore[attr-defined]

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
