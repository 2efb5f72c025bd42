"""Call timeouts kept by one timer per event loop (skycluster.messaging.deadlines)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from skycluster.errors import CallTimeout
from skycluster.messaging.deadlines import Deadlines


def test_each_call_expires_at_its_own_deadline_whatever_the_order_added() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        now = loop.time()
        late, early, answered = loop.create_future(), loop.create_future(), loop.create_future()
        deadlines.add(now + 0.30, late, "late", "b@h", 0.30)
        deadlines.add(now + 0.05, early, "early", "b@h", 0.05)  # sooner than the armed timer
        deadlines.add(now + 0.05, answered, "answered", "b@h", 0.05)
        answered.set_result("reply")
        deadlines.finished()

        with pytest.raises(
            CallTimeout, match=r"no reply from mailbox 'early' on b@h within 0.05 s"
        ):
            await early
        assert loop.time() - now >= 0.05
        assert not late.done() and answered.result() == "reply"
        with pytest.raises(CallTimeout, match="'late'"):
            await late
        assert loop.time() - now >= 0.30

    asyncio.run(main())


def test_finished_calls_do_not_pile_up() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        for n in range(10_000):  # a long run of calls that are each answered at once
            future: asyncio.Future[Any] = loop.create_future()
            deadlines.add(loop.time() + 5, future, "box", "b@h", 5)
            future.set_result(n)
            deadlines.finished()
        assert len(deadlines._heap) <= 2 * 1 + 64 + 1
        waiting: asyncio.Future[Any] = loop.create_future()
        deadlines.add(loop.time() + 0.01, waiting, "box", "b@h", 0.01)  # still expires
        with pytest.raises(CallTimeout):
            await waiting
        deadlines.finished()

    asyncio.run(main())


def test_cancel_stops_the_timer() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        future: asyncio.Future[Any] = loop.create_future()
        deadlines.add(loop.time() + 0.02, future, "box", "b@h", 0.02)
        deadlines.cancel()
        await asyncio.sleep(0.06)
        assert not future.done()  # the owner fails its calls itself when it cancels

    asyncio.run(main())
