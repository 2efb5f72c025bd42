"""Busy waiting by default: the application's loop polls for replies while traffic
shows they come soon, sleeps when it stops, and a blocked loop still never makes its
node look dead; on the standard asyncio loop and on uvloop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from cluster_helpers import (
    LOOPBACK,
    WITHIN,
    dial_name,
    eventually,
    make,
    needs_own_thread,
    running,
)

from skycluster import NodeDown
from skycluster.config import DEFAULT_BUSY_WAIT
from skycluster.distribution.busypolicy import AFTER_WRITE
from skycluster.distribution.busywait import BusyWait

A, B = f"a@{LOOPBACK}", f"b@{LOOPBACK}"

APP_LOOPS = ["asyncio", "uvloop"]


def run_on(app_loop: str, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``body`` on a fresh application loop of that kind, with an overall bound."""

    async def bounded() -> None:
        async with asyncio.timeout(45):
            await body()

    if app_loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        uvloop.run(bounded())
    else:
        asyncio.run(bounded())


def data_poller(cluster: Any) -> BusyWait:
    node = cluster._require().node
    assert node is not None and node.data_busy_wait is not None
    busy: BusyWait = node.data_busy_wait
    return busy


@needs_own_thread
@pytest.mark.parametrize("app_loop", APP_LOOPS)
def test_by_default_calls_are_answered_and_the_loop_sleeps_once_traffic_stops(
    app_loop: str,
) -> None:
    async def body() -> None:
        a, b = make("a"), make("b")
        assert a.settings.busy_wait == DEFAULT_BUSY_WAIT > 0
        async with running(a, b):
            box = b.register("echo")
            b.serve("echo_fast", lambda request: request)

            async def answer() -> None:
                async for request in box:
                    request.reply(request.message)

            answering = asyncio.create_task(answer())
            busy = data_poller(a)
            assert busy.loop is asyncio.get_running_loop()
            for n in range(300):
                assert await a.call(dial_name(b), "echo", n) == n
                assert await a.call(dial_name(b), "echo_fast", [n]) == [n]
            # Replies come within a round trip of each request: it learned to poll for them.
            assert busy.policy.windows[AFTER_WRITE] > 0
            await eventually(lambda: not busy.spinning, "it sleeps once the traffic stops")
            stats = a.stats()
            assert "heartbeat_timeouts" not in stats and stats["links_up"] == 1, stats
            answering.cancel()
        assert not busy.spinning
        assert asyncio.all_tasks() == {asyncio.current_task()}

    run_on(app_loop, body)


@needs_own_thread
@pytest.mark.parametrize("app_loop", APP_LOOPS)
def test_an_application_loop_blocked_for_10_s_while_polling_gives_no_node_down(
    app_loop: str,
) -> None:
    """The heartbeat timeout is 0.8 s: a loop blocked for 10 s right after a burst of
    calls (polling then) loses no link, on either side, and calls work afterwards."""

    async def body() -> None:
        a, b = make("a"), make("b")
        async with running(a, b):
            downs: list[NodeDown] = []

            def record(event: Any) -> None:
                if isinstance(event, NodeDown):
                    downs.append(event)

            a.on_event(record)
            b.on_event(record)
            b.serve("echo", lambda request: request)
            for n in range(200):
                assert await a.call(dial_name(b), "echo", n) == n
            time.sleep(10.0)  # noqa: ASYNC251 - the application blocks its own loop, deliberately
            assert await a.call(dial_name(b), "echo", "after", timeout=WITHIN) == "after"
            await asyncio.sleep(0.5)  # events from the blocked time have been delivered
            assert downs == []
            assert a.nodes() == [B] and b.nodes() == [A]
            for cluster in (a, b):
                stats = cluster.stats()
                assert stats["links_up"] == 1, stats  # never relinked
                assert "heartbeat_timeouts" not in stats, stats

    run_on(app_loop, body)
