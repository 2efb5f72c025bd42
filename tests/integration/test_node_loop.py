"""The node thread's event loop: uvloop when installed (``auto``), or the standard
asyncio loop; nodes on either kind link and message each other. ``shared``: no
thread, the node runs on the application's loop (and stalls with it)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from cluster_helpers import (
    Recorder,
    async_test,
    dial_name,
    eventually,
    make,
    running,
    skycluster_threads,
)

from skycluster import Cluster, ConfigError, NodeDown
from skycluster.distribution.busypolicy import AFTER_WRITE


@async_test
async def test_nodes_on_either_loop_link_call_and_keep_order() -> None:
    a, b = make("a", node_loop="asyncio"), make("b", node_loop="uvloop")
    async with running(a, b):
        assert (await a.status())["node_loop"] == "asyncio"
        assert (await b.status())["node_loop"] == "uvloop"
        assert await a.connect(dial_name(b))
        a.serve("double", lambda n: 2 * n)
        box = b.register("box")
        assert await b.call(dial_name(a), "double", 21) == 42
        for seq in range(2000):
            await a.send(dial_name(b), "box", seq)
        assert [await box.get() for _ in range(2000)] == list(range(2000))


@async_test
async def test_auto_takes_uvloop_when_installed() -> None:
    wanted = os.environ.get("SKYCLUSTER_NODE_LOOP", "auto")  # the suite's override, if any
    a = make("a")
    async with running(a):
        status = await a.status()
    assert status["node_loop"] == ("uvloop" if wanted in ("auto", "uvloop") else "asyncio")


@async_test
async def test_auto_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what `import uvloop` sees when absent
    a = make("a", node_loop="auto")
    async with running(a):
        assert (await a.status())["node_loop"] == "asyncio"
    with pytest.raises(ConfigError, match=r"pip install 'skycluster\[fast\]'"):
        make("b", node_loop="uvloop")


@async_test
async def test_busy_wait_polls_the_shared_loop_after_quick_traffic_and_ends_with_the_node() -> None:
    a = make("a", node_loop="shared", busy_wait=0.01)
    b = make("b", node_loop="asyncio", busy_wait=0)
    async with running(a, b):
        assert (await a.status())["busy_wait"] == 0.01
        assert (await b.status())["busy_wait"] == 0
        node = a._require().node
        assert node is not None and node.busy_wait is not None
        busy = node.busy_wait
        b.serve("echo", lambda request: request)
        for n in range(200):
            assert await a.call(dial_name(b), "echo", n) == n
        # Each reply came within 10 ms of its request: it learned to poll for them.
        assert busy.policy.windows[AFTER_WRITE] > 0
        await eventually(lambda: not busy.spinning, "it sleeps once the traffic stops")
        b_node = b._require().node
        assert b_node is not None and b_node.data_busy_wait is None  # 0: off
    assert not busy.spinning and asyncio.all_tasks() == {asyncio.current_task()}


@pytest.mark.parametrize("value", [-1, 0.5, float("nan"), "0.001", True])
def test_a_busy_wait_out_of_range_is_refused(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"busy_wait .*: expected .*, got"):
        Cluster("a@127.0.0.1", cookie="x", node_loop="shared", busy_wait=value)


@async_test
async def test_busy_wait_beside_a_node_thread_polls_the_loop_that_reads_the_links() -> None:
    # The node on its own thread: the application's loop reads the links, so that loop
    # polls after their traffic; the node's thread never does (it would take the GIL
    # from the application's thread over and over).
    a = make("a", node_loop="asyncio", busy_wait=0.01)
    b = make("b", node_loop="asyncio")
    async with running(a, b):
        assert (await a.status())["busy_wait"] == 0.01
        node = a._require().node
        assert node is not None and node.busy_wait is None
        busy = node.data_busy_wait
        assert busy is not None and busy.loop is asyncio.get_running_loop()
        b.serve("echo", lambda request: request)
        for n in range(200):
            assert await a.call(dial_name(b), "echo", n) == n
        assert busy.policy.windows[AFTER_WRITE] > 0  # it polls for replies
        await eventually(lambda: not busy.spinning, "it sleeps once the traffic stops")
    await eventually(lambda: not busy.spinning, "it stops with the node")
    assert asyncio.all_tasks() == {asyncio.current_task()}


def test_an_unknown_loop_is_refused_with_the_choices() -> None:
    with pytest.raises(
        ConfigError, match=r"node_loop .* must be auto, asyncio, uvloop or shared, got"
    ):
        Cluster("a@127.0.0.1", cookie="x", node_loop="tokio")


@async_test
async def test_a_shared_node_runs_on_the_applications_loop() -> None:
    me = asyncio.current_task()
    threads = set(threading.enumerate())
    a, b = make("a", node_loop="shared"), make("b", node_loop="shared")
    c = make("c", node_loop="asyncio")  # a node on its own thread, beside them
    async with running(a, b, c):
        assert [t.name for t in skycluster_threads()] == [f"skycluster-node {c.name}"]
        status = await a.status()
        assert status["own_thread"] is False and (await c.status())["own_thread"] is True
        for peer in (b, c):
            assert await a.connect(dial_name(peer))
            peer.serve("double", lambda n: 2 * n)
            assert await a.call(peer.name, "double", 21) == 42
        box = a.register("box")
        for seq in range(2000):
            await c.send(a.name, "box", ["c", seq])
            await b.send(a.name, "box", ["b", seq])
        got = [await box.get() for _ in range(4000)]
        for sender in "bc":
            assert [seq for who, seq in got if who == sender] == list(range(2000))
        subs = [node.pubsub.subscribe("t") for node in (a, b, c)]
        # b broadcasts to the nodes *it* is linked to: wait until every side sees the mesh
        await eventually(
            lambda: all(len(n.nodes()) == 2 for n in (a, b, c)), "c linked to b through a's mesh"
        )
        await b.pubsub.broadcast("t", "hello")
        assert [await sub.get() for sub in subs] == ["hello"] * 3
        mailbox = b.register("echo")

        async def echo() -> None:
            request = await mailbox.get()
            request.reply(request.message)

        answering = asyncio.create_task(echo())
        assert await a.call(b.name, "echo", {"x": 1}) == {"x": 1}
        await answering
    assert asyncio.all_tasks() == {me}  # stop() ended the nodes' tasks on this loop
    assert not skycluster_threads() and set(threading.enumerate()) <= threads


@async_test
async def test_blocking_forms_on_a_shared_loop_fail_at_once_and_work_from_a_thread() -> None:
    a, b = make("a", node_loop="shared"), make("b", node_loop="asyncio")
    async with running(a, b):
        b.serve("echo", lambda request: request)
        box = a.register("box")
        events = a.subscribe_blocking()
        refused: list[tuple[str, Callable[[], Any]]] = [
            ("connect_blocking()", lambda: a.connect_blocking(dial_name(b))),
            ("call_blocking()", lambda: a.call_blocking(dial_name(b), "echo", 1)),
            ("send_blocking() (linking first)", lambda: a.send_blocking(dial_name(b), "x", 1)),
            ("receive() of a mailbox or subscription", lambda: box.receive(timeout=5)),
            ("subscribe_blocking().get()", lambda: events.get(timeout=5)),
            ("subscribe_blocking().get()", lambda: a.wait_for_nodes_blocking(1, timeout=5)),
            ("disconnect_blocking()", lambda: a.disconnect_blocking(b.name)),
            ("stop_blocking()", a.stop_blocking),
        ]
        for what, blocking in refused:
            began = time.monotonic()
            refusal = re.escape(what) + r" would block this thread.*node_loop='shared'"
            with pytest.raises(RuntimeError, match=refusal):
                blocking()
            assert time.monotonic() - began < 1  # at once, not after the timeout
        assert a.running and not a.nodes()
        # from another thread they wait for the node, which this loop keeps running
        assert await asyncio.to_thread(a.connect_blocking, dial_name(b)) is True
        assert await asyncio.to_thread(a.call_blocking, b.name, "echo", 7) == 7
        await b.send(a.name, "box", "queued")
        await eventually(lambda: len(box) == 1, "the message is in the mailbox")
        assert box.receive(timeout=5) == "queued"  # nothing to wait for: allowed here
        assert events.get(timeout=5).node == b.name
        events.close()


def test_a_shared_node_starts_only_on_a_running_loop() -> None:
    a = make("a", node_loop="shared")
    with pytest.raises(RuntimeError, match=r"await cluster.start\(\)"):
        a.start_blocking()
    with pytest.raises(RuntimeError, match=r"async with Cluster"), a:
        pass
    assert not a.running


@async_test
async def test_a_blocked_loop_stalls_a_shared_node_and_it_relinks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The price of shared: a loop blocked for longer than the heartbeat timeout
    (0.8 s) makes the node look dead to peers on other threads; it comes back,
    and says why it stalled."""
    b = make("b", node_loop="asyncio")
    async with running(b):
        rb = Recorder(b.subscribe())
        a = make("a", node_loop="shared", peers=[dial_name(b)])  # its strategy relinks
        async with a:
            await rb.wait_up(a.name)
            time.sleep(2.0)  # noqa: ASYNC251 - the application blocks its loop, deliberately
            assert b.stats().get("heartbeat_timeouts", 0) >= 1
            down = await rb.wait_down(a.name)
            assert isinstance(down[-1], NodeDown) and down[-1].reason == "heartbeat_timeout"
            await eventually(lambda: a.nodes() == [b.name] and b.nodes() == [a.name], "relinked")
            assert a.stats()["loop_stalls"] >= 1
        await rb.aclose()
    stalls = [r.getMessage() for r in caplog.records if "ran nothing for" in r.getMessage()]
    assert stalls and "node_loop='shared'" in stalls[0], stalls


@async_test
async def test_a_starved_node_thread_says_so(caplog: pytest.LogCaptureFixture) -> None:
    a = make("a", node_loop="asyncio")
    async with running(a):
        runtime = a._runtime
        assert runtime is not None and runtime.loop is not None
        runtime.loop.call_soon_threadsafe(time.sleep, 1.0)  # a handler that blocks
        await eventually(lambda: a.stats().get("loop_stalls", 0) >= 1, "the stall counted")
    stalls = [r.getMessage() for r in caplog.records if "ran nothing for" in r.getMessage()]
    assert stalls and "its thread got no time" in stalls[0], stalls
