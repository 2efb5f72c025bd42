"""Where a node's links are read: with the node on its own thread and the cluster
started on an event loop, that loop (the application's) reads them, so replies and
messages reach it without a hop between threads. What keeps that safe: a blocked
loop never makes a peer look dead, a blocking wait on that loop's thread lends the
reading to the node's thread, and a loop that stopped running gives it back."""

from __future__ import annotations

import asyncio
import threading
import time

from cluster_helpers import (
    LOOPBACK,
    WITHIN,
    async_test,
    dial_name,
    eventually,
    make,
    needs_own_thread,
    running,
)

from skycluster import Cluster

A, B = f"a@{LOOPBACK}", f"b@{LOOPBACK}"


@needs_own_thread
@async_test
async def test_serve_handlers_run_on_the_loop_that_started_the_cluster() -> None:
    a, b = make("a"), make("b")
    async with running(a, b):
        b.serve("thread", lambda _: threading.get_ident())
        assert await a.connect(dial_name(b))
        assert await a.call(dial_name(b), "thread", None) == threading.get_ident()


@needs_own_thread
@async_test
async def test_blocking_waits_on_that_loop_still_get_their_reply_and_message() -> None:
    a, b = make("a"), make("b")
    async with running(a, b):
        b.serve("echo", lambda request: request)
        box = b.register("box")
        assert await a.connect(dial_name(b))
        # On the loop that reads the links: the node's thread reads them meanwhile.
        assert a.call_blocking(dial_name(b), "echo", 7, timeout=WITHIN) == 7
        await a.send(dial_name(b), "box", "hello")
        assert box.receive(timeout=WITHIN) == "hello"
        assert await a.call(dial_name(b), "echo", 8) == 8  # and the loop reads again


@needs_own_thread
@async_test
async def test_a_loop_blocked_with_unread_data_keeps_its_links() -> None:
    """Bytes wait in the sockets while the loop that reads them is blocked for longer
    than the heartbeat timeout (0.8 s): a sign of life, not silence."""
    a, b = make("a"), make("b")
    async with running(a, b):
        box = b.register("box", maxsize=1_000_000)
        assert await a.connect(dial_name(b))
        for i in range(20_000):
            a.send_nowait(dial_name(b), "box", [i, b"x" * 100])
        time.sleep(2.0)  # noqa: ASYNC251 - the application blocks its own loop, deliberately
        got = 0
        while got < 20_000:
            got += len(await asyncio.wait_for(box.get_many(20_000), WITHIN))
        for cluster in (a, b):
            stats = cluster.stats()
            assert stats["links_up"] == 1, stats
            assert "heartbeat_timeouts" not in stats, stats
        assert a.nodes() == [B] and b.nodes() == [A]


@needs_own_thread
@async_test
async def test_a_link_that_comes_up_during_a_blocking_wait_is_read_for_it() -> None:
    # Not linked yet: call_blocking links first, and the callee's side of the link
    # comes up while this thread (whose loop reads the links) may already be waiting.
    a, b = make("a"), make("b")
    async with running(a, b):
        b.serve("echo", lambda request: request)
        for n in range(10):
            assert a.call_blocking(dial_name(b), "echo", n, timeout=WITHIN) == n
            assert await a.disconnect(dial_name(b))
            await eventually(lambda: not a.nodes() and not b.nodes(), "both sides unlinked")
        assert await a.call(dial_name(b), "echo", "async") == "async"  # read here again


@needs_own_thread
def test_a_loop_that_stopped_running_gives_the_reading_back() -> None:
    loop = asyncio.new_event_loop()
    a, b = make("a"), make("b")
    try:

        async def start() -> None:
            await a.start()
            await b.start()
            b.serve("echo", lambda request: request)
            assert await a.connect(dial_name(b))

        loop.run_until_complete(start())
        # The loop that reads the links runs no more: within a heartbeat interval
        # the node's thread reads them again, so a plain thread's call is answered.
        replies: list[object] = []
        caller = threading.Thread(
            target=lambda: replies.append(a.call_blocking(dial_name(b), "echo", 5, timeout=WITHIN))
        )
        caller.start()
        caller.join(WITHIN + 1)
        assert replies == [5]
    finally:

        async def stop(*clusters: Cluster) -> None:
            for cluster in clusters:
                await cluster.stop()

        loop.run_until_complete(stop(a, b))
        loop.close()
