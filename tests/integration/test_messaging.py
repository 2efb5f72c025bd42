"""Messaging between real processes on loopback: mailboxes, send, call, pub/sub,
backpressure and large messages. Peers run ``msgpeer.py``; the test's own node
runs in this process."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from certs import TestCA
from cluster_helpers import SHARED, dial_name, needs_own_thread

import skycluster
from skycluster import (
    CallTimeout,
    MessageTooLarge,
    NodeDisconnected,
    NodeDown,
    NodeUnreachable,
    NoSuchMailbox,
    UnencodableMessage,
)
from skycluster.distribution.link import READ_SIZE
from skycluster.messaging import channel as channel_module

HERE = Path(__file__).resolve().parent
COOKIE = "messaging-test-cookie"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Peer:
    def __init__(self, name: str, proc: subprocess.Popen[str]) -> None:
        self.name = name  # with the port: usable to link
        self.identity = name.rsplit(":", 1)[0]
        self.proc = proc
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                continue

    def wait_for(self, event: str, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no {event!r} within {timeout} s")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line.get("event") == event:
                return line

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def start_peer() -> Iterator[Callable[..., Peer]]:
    started: list[Peer] = []

    def start(label: str, *extra: str, name: str | None = None) -> Peer:
        name = name or f"{label}@127.0.0.1:{free_port()}"
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "msgpeer.py"), name, COOKIE, *extra],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        peer = Peer(name, proc)
        started.append(peer)
        peer.wait_for("ready")
        return peer

    yield start
    for peer in started:
        peer.kill()


def async_test(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        async def bounded() -> None:
            async with asyncio.timeout(50):
                await fn(*args, **kwargs)

        asyncio.run(bounded())

    return wrapper


def local_cluster(label: str = "test", **options: Any) -> skycluster.Cluster:
    return skycluster.Cluster(
        f"{label}@127.0.0.1:{free_port()}", cookie=COOKIE, port_mapper=False, **options
    )


async def stats(cluster: skycluster.Cluster, peer: Peer, timeout: float = 10) -> dict[str, Any]:
    result: dict[str, Any] = await cluster.call(peer.name, "ctl", {"op": "stats"}, timeout=timeout)
    return result


async def until(
    check: Callable[[], Coroutine[Any, Any, bool]], within: float = 20.0, what: str = ""
) -> None:
    """Poll a condition that lives in another process (no event to await there)."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.05)


async def downs(events: skycluster.AsyncSubscription) -> list[NodeDown]:
    """The NodeDown events queued so far (waiting a little for stragglers)."""
    found: list[NodeDown] = []
    try:
        while True:
            async with asyncio.timeout(0.3):
                event = await events.get()
            if isinstance(event, NodeDown):
                found.append(event)
    except TimeoutError:
        return found


# -- send ------------------------------------------------------------------------


@async_test
async def test_fifo_per_sender_under_load(start_peer: Callable[..., Peer]) -> None:
    """Several senders, small and fragmented (large) messages mixed: each
    sender's messages reach the mailbox complete and in order."""
    peer = start_peer("fifo")
    async with local_cluster() as cluster:
        per_sender = 20_000

        async def sender(tag: str) -> None:
            for seq in range(per_sender):
                big = seq % 5000 == 17  # now and then a message larger than a fragment
                payload = os.urandom(200_000) if big else b"p" * 20
                await cluster.send(peer.name, "sink", [tag, seq, payload])

        await asyncio.gather(*(sender(f"s{i}") for i in range(4)))

        # the stats call queues behind every message still in flight on the link, and a
        # loaded 2-core machine drains 80,000 of them slowly: generous liveness bounds
        async def all_in() -> bool:
            sink = (await stats(cluster, peer, timeout=60))["sinks"]["sink"]
            return bool(sink["count"] == 4 * per_sender)

        await until(all_in, within=90, what="every message delivered")
        sink = (await stats(cluster, peer))["sinks"]["sink"]
        assert sink["out_of_order"] == 0
        assert sink["last"] == {f"s{i}": per_sender - 1 for i in range(4)}


@async_test
async def test_send_round_trip_and_local_delivery(start_peer: Callable[..., Peer]) -> None:
    peer = start_peer("echo")
    async with local_cluster() as cluster:
        box = cluster.register("inbox")
        message = {"text": "héllo", "n": [1, 2.5, None, True], "raw": b"\x00\xff"}
        await cluster.send(peer.name, "echo", [cluster.name, "inbox", message])
        async with asyncio.timeout(10):
            assert await box.get() == message
        # to this node itself: delivered as a copy
        await cluster.send(cluster.name, "inbox", message)
        assert box.get_nowait() == message
        with pytest.raises(NoSuchMailbox):
            await cluster.send(cluster.name, "nobody-here", 1)
        with pytest.raises(skycluster.AlreadyRegistered):
            cluster.register("inbox")
        box.close()
        cluster.register("inbox").close()  # the name is free again
        # a remote mailbox that does not exist: dropped and counted there, link kept
        await cluster.send(peer.name, "nobody", 1)
        await cluster.send(peer.name, "nobody", 2)
        result = await stats(cluster, peer)
        assert result["counters"]["messages_to_unknown_mailbox"] == 2
        assert cluster.nodes() == [peer.identity]


@async_test
async def test_send_to_unknown_node_errors() -> None:
    async with local_cluster() as cluster:
        with pytest.raises(NodeUnreachable, match=re.escape("nobody@127.0.0.1")):
            await cluster.send(f"nobody@127.0.0.1:{free_port()}", "box", 1)
        with pytest.raises(NodeUnreachable, match="not linked"):
            cluster.send_nowait(f"nobody@127.0.0.1:{free_port()}", "box", 1)
        with pytest.raises(UnencodableMessage, match="register_type"):
            await cluster.send(cluster.name, "box", object())


# -- call ------------------------------------------------------------------------


@async_test
async def test_call_and_every_failure(start_peer: Callable[..., Peer]) -> None:
    peer = start_peer("callee")
    async with local_cluster() as cluster:
        assert await cluster.call(peer.name, "echo", {"q": [1, 2]}) == {"q": [1, 2]}
        with pytest.raises(NoSuchMailbox, match="missing"):
            await cluster.call(peer.name, "missing", 1)
        began = time.monotonic()
        with pytest.raises(CallTimeout, match="hang"):
            await cluster.call(peer.name, "hang", 1, timeout=0.5)
        assert time.monotonic() - began < 5
        # the link is still fine after a timeout
        assert await cluster.call(peer.name, "echo", "still here") == "still here"
        # the peer dies while handling the call: raises at once, not after 30 s
        began = time.monotonic()
        with pytest.raises(NodeDisconnected, match=peer.identity):
            await cluster.call(peer.name, "die", 1, timeout=30)
        assert time.monotonic() - began < 10
        with pytest.raises(NodeUnreachable):
            await cluster.call(peer.name, "echo", 1, timeout=30)
        assert isinstance(CallTimeout("x"), TimeoutError)


@async_test
async def test_served_handlers(start_peer: Callable[..., Peer]) -> None:
    peer = start_peer("server")
    async with local_cluster() as cluster:
        assert await cluster.call(peer.name, "double", 21) == 42
        assert await cluster.call(peer.name, "double", "ab") == "abab"
        with pytest.raises(skycluster.CallFailed, match="boom"):
            await cluster.call(peer.name, "boom", 1)
        assert await cluster.call(peer.name, "double", 1) == 2  # still linked
        stop = cluster.serve("triple", lambda x: x * 3)
        assert await cluster.call(cluster.name, "triple", 2) == 6
        with pytest.raises(skycluster.AlreadyRegistered):
            cluster.register("triple")
        stop()
        with pytest.raises(NoSuchMailbox):
            await cluster.call(cluster.name, "triple", 2)


@async_test
async def test_call_to_own_node() -> None:
    async with local_cluster() as cluster:
        box = cluster.register("double")

        async def serve() -> None:
            async for request in box:
                request.reply(request.message * 2)

        server = asyncio.create_task(serve())
        assert await cluster.call(cluster.name, "double", 21) == 42
        with pytest.raises(NoSuchMailbox):
            await cluster.call(cluster.name, "nobody", 1)
        server.cancel()


# -- pub/sub ---------------------------------------------------------------------


@async_test
async def test_broadcast_reaches_every_subscriber_once(start_peer: Callable[..., Peer]) -> None:
    peers = [start_peer(f"sub{i}") for i in range(3)]
    async with local_cluster() as cluster:
        for peer in peers:
            assert await cluster.call(
                peer.name, "ctl", {"op": "subscribe", "topic": "t", "count": 5}
            )
        own = [cluster.pubsub.subscribe("t") for _ in range(2)]
        other_topic = cluster.pubsub.subscribe("other")
        count = 300
        for seq in range(count):
            await cluster.pubsub.broadcast("t", ["b", seq])

        async def all_in() -> bool:
            for peer in peers:
                subs = (await stats(cluster, peer))["topics"]["t"]
                if any(s["count"] < count for s in subs):
                    return False
            return True

        await until(all_in, what="every subscriber got every broadcast")
        for peer in peers:
            subs = (await stats(cluster, peer))["topics"]["t"]
            assert len(subs) == 5
            for sub in subs:
                assert sub["count"] == count  # exactly once
                assert sub["out_of_order"] == 0
        for sub in own:
            assert [sub.get_nowait() for _ in range(count)] == [["b", s] for s in range(count)]
            assert len(sub) == 0
        assert len(other_topic) == 0
        # a peer broadcasts: crosses to us too
        assert await cluster.call(
            peers[0].name, "ctl", {"op": "broadcast", "topic": "t", "msg": "from peer"}
        )
        async with asyncio.timeout(10):
            assert await own[0].get() == "from peer"
            assert await own[1].get() == "from peer"


@async_test
async def test_local_direct_and_from_broadcasts(start_peer: Callable[..., Peer]) -> None:
    a, b = start_peer("pa"), start_peer("pb")
    async with local_cluster() as cluster:
        for peer in (a, b):
            await cluster.call(peer.name, "ctl", {"op": "subscribe", "topic": "t", "count": 1})
        mine, other = cluster.pubsub.subscribe("t"), cluster.pubsub.subscribe("t")
        await cluster.send(a.name, "echo", [cluster.name, "none", 0])  # link to a
        await cluster.send(b.name, "echo", [cluster.name, "none", 0])  # and b
        cluster.pubsub.local_broadcast("t", "local")
        await cluster.pubsub.direct_broadcast(a.name, "t", "direct")
        await cluster.pubsub.broadcast_from(mine, "t", "from")
        async with asyncio.timeout(10):
            assert await other.get() == "local"
            assert await other.get() == "from"
        assert mine.get_nowait() == "local"
        assert len(mine) == 0  # broadcast_from skipped the sender's own subscription

        async def delivered() -> bool:
            counts = [(await stats(cluster, p))["topics"]["t"][0]["count"] for p in (a, b)]
            return counts == [2, 1]

        await until(delivered, what="direct to a only, from-broadcast to both")
        cluster.pubsub.unsubscribe(other)
        cluster.pubsub.local_broadcast("t", "after")
        assert len(other) == 0 and mine.get_nowait() == "after"


# -- failures and limits ---------------------------------------------------------


@async_test
async def test_node_killed_mid_stream(start_peer: Callable[..., Peer]) -> None:
    peer = start_peer("streamer")
    async with local_cluster() as cluster:
        box = cluster.register("in")
        events = cluster.subscribe()
        await cluster.call(
            peer.name, "ctl", {"op": "stream", "to": cluster.name, "box": "in", "count": 10**7}
        )
        received: list[Any] = []
        async with asyncio.timeout(20):
            while len(received) < 5000:
                received.extend(await box.get_many())
        peer.kill()
        async with asyncio.timeout(10):
            event = await events.get()
            while not isinstance(event, NodeDown):
                event = await events.get()
        assert event.node == peer.identity
        assert event.reason == skycluster.DownReason.CONNECTION_CLOSED
        while len(box):
            received.append(box.get_nowait())
        seqs = [m[1] for m in received]
        assert seqs == list(range(len(seqs)))  # a prefix of the stream, in order
        with pytest.raises(NodeUnreachable):
            await cluster.send(peer.name, "sink", 1)


@async_test
async def test_sends_resume_after_the_peer_restarts(start_peer: Callable[..., Peer]) -> None:
    peer = start_peer("phoenix")
    async with local_cluster() as cluster:
        events = cluster.subscribe()
        await cluster.send(peer.name, "sink", ["before", 0])

        async def counted(who: Peer, n: int) -> None:
            async def check() -> bool:
                return bool((await stats(cluster, who))["sinks"]["sink"]["count"] >= n)

            await until(check, what=f"{n} message(s) at {who.name}")

        await counted(peer, 1)
        peer.kill()
        async with asyncio.timeout(10):
            while not isinstance(await events.get(), NodeDown):
                pass
        again = start_peer("phoenix", name=peer.name)  # same name and port, new incarnation
        await cluster.send(again.name, "sink", ["after", 0])  # links again by itself
        await cluster.send(again.name, "sink", ["after", 1])
        await counted(again, 2)
        sink = (await stats(cluster, again))["sinks"]["sink"]
        assert sink["count"] == 2 and sink["last"] == {"after": 1}


@async_test
async def test_50mb_message_does_not_starve_heartbeats(start_peer: Callable[..., Peer]) -> None:
    peer = start_peer("big", "--heartbeat", "0.2", "0.8")
    async with local_cluster(heartbeat_interval=0.2, heartbeat_timeout=0.8) as cluster:
        events = cluster.subscribe()
        big = os.urandom(50 * 1024 * 1024)
        for seq in range(3):
            await cluster.send(peer.name, "sink", ["big", seq, big])
        await cluster.send(peer.name, "sink", ["big", 3, b"small"])

        async def arrived() -> bool:
            return bool((await stats(cluster, peer))["sinks"]["sink"]["count"] == 4)

        await until(arrived, within=40, what="three 50 MB messages")
        sink = (await stats(cluster, peer))["sinks"]["sink"]
        assert sink["bytes"] == 3 * len(big) + 5 and sink["out_of_order"] == 0
        assert await downs(events) == []  # no false NodeDown on either side
        assert cluster.nodes() == [peer.identity]
        assert peer.lines.empty() or all(
            line.get("event") != "nodedown" for line in list(peer.lines.queue)
        )


@async_test
async def test_size_limits_and_undecodable_messages(start_peer: Callable[..., Peer]) -> None:
    peer = start_peer("strict", "--max-message-size", str(1024 * 1024))

    class Point:
        def __init__(self, x: int) -> None:
            self.x = x

    # known here, unknown to the peer
    skycluster.register_type(Point, 42, lambda p: p.x.to_bytes(4, "big"), lambda b: Point(0))
    async with local_cluster(max_message_size=4 * 1024 * 1024) as cluster:
        with pytest.raises(MessageTooLarge, match="max_message_size"):
            await cluster.send(peer.name, "sink", b"x" * (5 * 1024 * 1024))
        await cluster.send(peer.name, "sink", ["t", 0, b"ok"])
        await cluster.send(peer.name, "sink", ["t", 1, b"y" * (2 * 1024 * 1024)])  # too large there
        await cluster.send(peer.name, "sink", ["t", 1, Point(3)])  # undecodable there
        await cluster.send(peer.name, "sink", ["t", 1, Point(4)])
        await cluster.send(peer.name, "sink", ["t", 1, b"still linked"])

        async def both_in() -> bool:
            return bool((await stats(cluster, peer))["sinks"]["sink"]["count"] >= 2)

        await until(both_in, what="the two good messages")
        result = await stats(cluster, peer)
        assert result["sinks"]["sink"]["count"] == 2
        assert result["sinks"]["sink"]["out_of_order"] == 0
        assert result["counters"]["messages_too_large"] == 1
        assert result["counters"]["undecodable_messages"] == 2
        assert cluster.nodes() == [peer.identity]


@async_test
async def test_slow_receiver_bounds_memory(start_peer: Callable[..., Peer]) -> None:
    """A receiver slower than the sender: the sender's buffer stays bounded,
    send_nowait reports it full, nothing is lost and nobody is declared down."""
    peer = start_peer("slowpoke", "--heartbeat", "0.2", "1.0")
    limit = 256 * 1024
    async with local_cluster(
        send_buffer_size=limit, heartbeat_interval=0.2, heartbeat_timeout=1.0
    ) as cluster:
        events = cluster.subscribe()
        payload = b"z" * 10_240
        count = 4000  # 40 MB, far more than every buffer on the way
        messenger = cluster._messaging._messenger()
        peak = 0
        for seq in range(count):
            await cluster.send(peer.name, "slow", ["slow", seq, payload])
            channel = messenger.channels[peer.identity]
            peak = max(peak, channel.size)
        assert peak <= limit + len(payload) + 64
        with pytest.raises(skycluster.BufferFull):
            for seq in range(10_000):
                cluster.send_nowait(peer.name, "slow", ["other", seq, payload])

        async def done() -> bool:
            return bool((await stats(cluster, peer))["sinks"]["slow"]["count"] >= count)

        await until(done, within=40, what="the slow receiver catching up")
        slow = (await stats(cluster, peer))["sinks"]["slow"]
        assert slow["last"]["slow"] == count - 1 and slow["out_of_order"] == 0
        # its mailbox (maxsize 100) held the link back instead of growing; the
        # bound is soft by what one read from the socket holds
        assert slow["max_queued"] <= 100 + READ_SIZE // len(payload) + 20
        assert (await stats(cluster, peer))["counters"].get("links_held_back", 0) > 0
        assert await downs(events) == []


def _tls_files(directory: Path) -> dict[str, str]:
    """A CA and one certificate it signs (both nodes may share it)."""
    files = TestCA.create("messaging test CA").issue(directory, "node", ["skycluster"])
    return {"tls_cert": str(files.cert), "tls_key": str(files.key), "tls_ca": str(files.ca)}


def test_a_call_after_a_reply_goes_out_at_once_and_a_stream_in_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A small frame skips the node's queue when the link is idle: nothing went out
    that way for DIRECT_IDLE, or the peer has sent something since (a request after
    its reply, a reply after its request). A one-way stream is batched."""
    monkeypatch.setattr(channel_module, "DIRECT_IDLE", 3600.0)  # no link idles that long here

    async def main() -> None:
        async with local_cluster("da") as a, local_cluster("db") as b:
            b.serve("echo", lambda request: request)
            sink = b.register("sink")
            assert await a.call(dial_name(b), "echo", -1) == -1
            before = a.stats().get("direct_writes", 0), b.stats().get("direct_writes", 0)
            for n in range(100):
                assert await a.call(b.name, "echo", n) == n
            calls = a.stats()["direct_writes"] - before[0]
            replies = b.stats()["direct_writes"] - before[1]
            assert (calls, replies) == (100, 100)
            for n in range(2000):
                await a.send(b.name, "sink", n)
            got: list[Any] = []
            async with asyncio.timeout(20):
                while len(got) < 2000:
                    got.extend(await sink.get_many())
            assert got == list(range(2000))
            # the first send follows a reply; the rest waited for the node's batches
            assert a.stats()["direct_writes"] - before[0] - calls <= 5

    asyncio.run(main())


def test_messaging_over_tls(tmp_path: Path) -> None:
    """TLS links take the node's loop for every write (no direct writes)."""
    tls = _tls_files(tmp_path)

    async def main() -> None:
        async with local_cluster("ta", **tls) as a, local_cluster("tb", **tls) as b:
            box = b.register("box")
            b.serve("echo", lambda request: request)
            big = os.urandom(3 * 1024 * 1024)  # fragmented
            assert b.address is not None
            for seq in range(2000):
                await a.send(f"{b.name}:{b.address.split(':')[1]}", "box", [seq, b"x" * 50])
            await a.send(b.name, "box", [2000, big])
            got: list[Any] = []
            async with asyncio.timeout(20):
                while len(got) < 2001:
                    got.extend(await box.get_many())
            assert [m[0] for m in got] == list(range(2001)) and got[-1][1] == big
            assert await a.call(b.name, "echo", {"over": "tls"}) == {"over": "tls"}
            if not SHARED:  # shared: the node's loop is the sender's, writes go through TLS
                assert a.stats().get("direct_writes", 0) == 0

    asyncio.run(main())


@needs_own_thread
def test_plain_threads(start_peer: Callable[..., Peer]) -> None:
    peer = start_peer("threads")
    with local_cluster() as cluster:
        box = cluster.register("replies")
        per_thread = 2000
        errors: list[BaseException] = []

        def worker(tag: str) -> None:
            try:
                for seq in range(per_thread):
                    cluster.send_blocking(peer.name, "sink", [tag, seq], timeout=10)
                assert cluster.call_blocking(peer.name, "echo", tag, timeout=10) == tag
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors
        deadline = time.monotonic() + 20
        while True:
            result = cluster.call_blocking(peer.name, "ctl", {"op": "stats"})
            if result["sinks"]["sink"]["count"] == 4 * per_thread or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert result["sinks"]["sink"]["count"] == 4 * per_thread
        assert result["sinks"]["sink"]["out_of_order"] == 0
        cluster.send_blocking(peer.name, "echo", [cluster.name, "replies", "back"])
        assert box.receive(timeout=10) == "back"
        with pytest.raises(TimeoutError):
            box.receive(timeout=0.1)
        with pytest.raises(NoSuchMailbox):
            cluster.call_blocking(peer.name, "nobody", 1)
        with pytest.raises(CallTimeout):
            cluster.call_blocking(peer.name, "hang", 1, timeout=0.3)
    with pytest.raises(EOFError):
        box.receive(timeout=1)  # the cluster stopped: the mailbox is closed


@needs_own_thread
def test_a_frame_a_thread_wrote_in_part_is_finished_without_waiting_for_a_heartbeat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A direct write from a plain thread that the socket takes only in part: the
    node's loop sends the rest at once, not with the next heartbeat (an hour here)."""
    real_write = os.write
    halves: list[int] = []

    def half_write(fd: int, data: bytes | memoryview) -> int:
        # the first direct write, from this (the sending) thread: the kernel takes half
        if len(data) > 1 and not halves and threading.current_thread() is threading.main_thread():
            halves.append(len(data) // 2)
            return real_write(fd, data[: len(data) // 2])
        return real_write(fd, data)

    slow: dict[str, Any] = {"heartbeat_interval": 3600.0, "heartbeat_timeout": 7200.0}
    b_name = f"b@127.0.0.1:{free_port()}"
    b_cluster = skycluster.Cluster(b_name, cookie=COOKIE, port_mapper=False, **slow)
    with local_cluster("a", **slow) as a, b_cluster as b:
        box = b.register("inbox")
        assert a.connect_blocking(b_name)
        monkeypatch.setattr(os, "write", half_write)  # what the messenger calls
        deadline = time.monotonic() + 10
        seq = 0
        while not halves:  # until a send takes the direct path (the link may be busy)
            assert time.monotonic() < deadline, "no send took the direct write"
            a.send_blocking(b_name, "inbox", ["whole", seq, "x" * 200])
            assert box.receive(timeout=10) == ["whole", seq, "x" * 200]
            seq += 1
        a.send_blocking(b_name, "inbox", "next")
        assert box.receive(timeout=10) == "next"  # the framing is intact
