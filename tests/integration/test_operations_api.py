"""Operations features in-process: the HTTP endpoint, telemetry hooks, metrics,
metadata and the membership view, with real clusters on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_helpers import COOKIE, async_test, dial_name, eventually_blocking, make, running
from ops_helpers import EventStream, get, parse_reply, raw, split_address

import skycluster
from skycluster import Cluster, NodeUp, StartError, telemetry
from skycluster.ops import prometheus
from skycluster.strategy import Epmd

A, B = "a@127.0.0.1", "b@127.0.0.1"


@contextlib.contextmanager
def started(*clusters: Cluster) -> Iterator[None]:
    try:
        for cluster in clusters:
            cluster.start_blocking()
        yield
    finally:
        for cluster in clusters:
            cluster.stop_blocking()


def http(cluster: Cluster) -> str:
    assert cluster.http_address is not None
    return cluster.http_address


class Recorder:
    """Telemetry events of one node, collected on the node's thread."""

    def __init__(self, node: str, events: str | list[str] | None = None) -> None:
        self.node = node
        self.seen: list[tuple[str, dict[str, float], dict[str, Any]]] = []
        self._changed = threading.Condition()
        self.detach = telemetry.attach(events, self._handle)

    def _handle(self, event: str, m: Any, md: Any) -> None:
        if md.get("node") == self.node:
            with self._changed:
                self.seen.append((event, dict(m), dict(md)))
                self._changed.notify_all()

    def wait(self, event: str, within: float = 10.0, **match: Any) -> tuple[dict[str, float], Any]:
        deadline = time.monotonic() + within
        with self._changed:
            while True:
                for name, m, md in self.seen:
                    if name == event and all(md.get(k) == v for k, v in match.items()):
                        return m, md
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {event} {match} within {within} s: {self.seen}")
                self._changed.wait(remaining)


def test_health_ready_status_and_metadata() -> None:
    a = make("a", http="127.0.0.1:0", min_nodes=1, metadata={"role": "api", "zone": "eu-1"})
    b = make("b", metadata={"role": "worker", "version": 3})
    with started(a, b):
        where = http(a)
        assert split_address(where)[0] == "127.0.0.1"
        assert get(where, "/health").status == 200
        not_ready = get(where, "/ready")
        assert not_ready.status == 503 and "0 of 1" in not_ready.text
        empty = get(where, "/status").json()
        assert empty["node"] == A and empty["peers"] == [] and empty["ready"] is False
        assert empty["metadata"] == {"role": "api", "zone": "eu-1"}
        assert a.connect_blocking(dial_name(b))
        assert get(where, "/ready").status == 200
        before = time.time()

        def peer_with_rtt() -> Any:
            peers = get(where, "/status").json()["peers"]
            return peers if peers and peers[0]["rtt"] is not None else None

        (peer,) = eventually_blocking(peer_with_rtt, "a heartbeat round trip measured")
        assert peer["node"] == B
        assert peer["address"] == b.address
        assert peer["metadata"] == {"role": "worker", "version": 3}
        assert before - 10 < peer["since"] <= time.time()
        assert 0 < peer["rtt"] < 5
        assert a.nodes(with_metadata=True) == {B: {"role": "worker", "version": 3}}
        assert a.nodes() == [B]
        assert b.members()[A].metadata == {"role": "api", "zone": "eu-1"}
        # HEAD gives the head only; every body is free of the cookie.
        head = get(where, "/status", method="HEAD")
        assert head.status == 200 and head.body == b""
        for path in ("/", "/page.js", "/status", "/metrics", "/health", "/ready", "/nope"):
            assert COOKIE.encode() not in get(where, path).body


@async_test
async def test_status_and_remote_status_through_the_api() -> None:
    a, b = make("a", metadata={"role": "api"}), make("b")
    async with running(a, b):
        assert await a.connect(dial_name(b))
        mine = await a.status()
        assert [p["node"] for p in mine["peers"]] == [B]
        # b asks a over the link (a STATUS request frame): a's view lists b.
        theirs = await b.remote_status(dial_name(a))
        assert theirs["node"] == A and theirs["metadata"] == {"role": "api"}
        assert [p["node"] for p in theirs["peers"]] == [B]


def test_metadata_larger_than_the_handshake_allows_is_refused_at_construction() -> None:
    with pytest.raises(skycluster.ConfigError, match="metadata"):
        make("a", metadata={"blob": "x" * 5000})
    with pytest.raises(skycluster.ConfigError, match="min_nodes"):
        make("a", min_nodes=-1)


def test_telemetry_of_connect_disconnect_links_and_handshakes() -> None:
    a, b = make("a"), make("b")
    stranger = make("c", cookie="another-cookie")
    on_a, on_c = Recorder(A), Recorder("c@127.0.0.1")
    try:
        with started(a, b, stranger):
            assert a.connect_blocking(dial_name(b))
            measured, meta = on_a.wait("connect.ok", peer=B)
            assert measured["duration"] > 0 and meta["address"] == b.address
            on_a.wait("link.up", peer=B, hidden=False, direction="out")
            assert a.disconnect_blocking(B)
            on_a.wait("disconnect.ok", peer=B)
            lasted, _ = on_a.wait("link.down", peer=B, reason="disconnect")
            assert lasted["duration"] >= 0
            assert not a.disconnect_blocking(B)
            on_a.wait("disconnect.error", peer=B, reason="not_linked")
            # a wrong cookie: the acceptor reports the rejected handshake, the dialler its error
            assert not stranger.connect_blocking(dial_name(a))
            _, rejected = on_a.wait("handshake.rejected", reason="auth")
            assert rejected["claimed"] == "c@127.0.0.1"
            _, error = on_c.wait("connect.error", peer=A, reason="refused_auth")
            assert "cookies differ" in error["error"]
            assert a.stats()["handshakes_failed"] == 1
    finally:
        on_a.detach.close()
        on_c.detach.close()


def test_heartbeat_timeout_and_strategy_polls_are_emitted() -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead.listen()  # accepts, never answers: the dial times out in the handshake
    port = dead.getsockname()[1]
    a = make("a", topologies={"static": Epmd(hosts=[f"z@127.0.0.1:{port}"], retry_interval=0.1)})
    on_a = Recorder(A, ["strategy.*", "connect.error"])
    try:
        with started(a):
            polled, meta = on_a.wait("strategy.poll", topology="static")
            assert polled["nodes"] == 1 and polled["failed"] == 1
            assert meta["node"] == A
            _, error = on_a.wait("connect.error", peer="z@127.0.0.1")
            assert error["reason"] in ("timeout", "handshake")
    finally:
        on_a.detach.close()
        dead.close()


@async_test
async def test_a_silent_peer_emits_heartbeat_timeout() -> None:
    a, b = make("a"), make("b", heartbeat_timeout=30.0)  # only a notices the silence
    on_a = Recorder(A, ["heartbeat.timeout", "link.down"])
    try:
        async with running(a, b):
            assert await a.connect(dial_name(b))
            runtime = b._runtime
            assert runtime is not None and runtime.node is not None
            node_b = runtime.node
            await asyncio.to_thread(eventually_blocking, lambda: A in node_b.links, "b linked")

            def freeze() -> None:  # b neither reads nor writes on its link, as if frozen
                link = node_b.links[A]
                assert link.transport is not None
                link.transport.pause_reading()
                link.send = lambda frame: None  # type: ignore[method-assign]
                link.write_frame = lambda data: None  # type: ignore[method-assign]

            await asyncio.wrap_future(runtime.call(freeze))
            silence, _ = await asyncio.to_thread(on_a.wait, "heartbeat.timeout", 10.0, peer=B)
            assert silence["silence"] > 0.8
            await asyncio.to_thread(
                on_a.wait, "link.down", 10.0, peer=B, reason="heartbeat_timeout"
            )
    finally:
        on_a.detach.close()


def test_metrics_in_the_prometheus_format() -> None:
    a = make("a", http="127.0.0.1:0")
    b, stranger = make("b"), make("c", cookie="wrong")
    with started(a, b, stranger):
        assert a.connect_blocking(dial_name(b))
        assert not stranger.connect_blocking(dial_name(a))

        def scraped() -> str | None:
            text = get(http(a), "/metrics").text
            return (
                text
                if 'skycluster_heartbeat_rtt_seconds_count{node="a@127.0.0.1"} 0' not in text
                else None
            )

        text = eventually_blocking(scraped, "a heartbeat round trip in the histogram")
        reply = get(http(a), "/metrics")
        assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain")
        for line in (
            'skycluster_members{node="a@127.0.0.1",state="up"} 1.0',
            'skycluster_connects_total{node="a@127.0.0.1",reason="",result="ok"} 1.0',
            'skycluster_handshake_failures_total{node="a@127.0.0.1",reason="auth"} 1.0',
            'skycluster_link_transitions_total{node="a@127.0.0.1",reason="dialled",'
            'transition="up"} 1.0',
            'skycluster_subscriber_overflows_total{node="a@127.0.0.1"} 0.0',
            'skycluster_loop_stalls_total{node="a@127.0.0.1"} 0.0',
        ):
            assert line in text, text
        assert 'skycluster_heartbeat_rtt_seconds_bucket{le="+Inf",node="a@127.0.0.1"}' in text
        assert 'skycluster_bytes_total{direction="in",node="a@127.0.0.1"}' in text
        # the same numbers in an application's own registry
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry()
        registry.register(prometheus.collector(a))
        assert b'skycluster_members{node="a@127.0.0.1",state="up"} 1.0' in generate_latest(registry)


def test_metrics_without_prometheus_client_say_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(prometheus, "AVAILABLE", False)
    a = make("a", http="127.0.0.1:0")
    with started(a):
        reply = get(http(a), "/metrics")
        assert reply.status == 501 and "pip install 'skycluster[metrics]'" in reply.text
        assert get(http(a), "/health").status == 200


def test_bad_requests_are_refused_and_the_endpoint_keeps_serving() -> None:
    a = make("a", http="127.0.0.1:0")
    with started(a):
        where = http(a)
        huge = b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n"
        assert parse_reply(raw(where, huge)).status == 431
        assert parse_reply(raw(where, b"\x16\x03\x01\x02\x00garbage\r\n\r\n")).status == 400
        posted = raw(where, b"POST /status HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert parse_reply(posted).status == 405
        body = raw(where, b"POST /status HTTP/1.1\r\nContent-Length: 100000000\r\n\r\n")
        assert parse_reply(body).status == 413
        assert get(where, "/nope").status == 404
        # idle connections (slowloris) do not hold up others, and their number is bounded
        idle = [socket.create_connection(split_address(where)) for _ in range(64)]
        try:
            for sock in idle:
                sock.sendall(b"GET /health HTTP/1.1\r\n")  # never finished

            def refused() -> bool:
                return parse_reply(raw(where, b"GET /health HTTP/1.1\r\n\r\n")).status == 503

            eventually_blocking(refused, "the 65th connection refused while 64 are open")
        finally:
            for sock in idle:
                sock.close()
        eventually_blocking(lambda: get(where, "/health").status == 200, "served again")


def test_a_loopback_endpoint_answers_only_for_localhost_or_an_ip() -> None:
    """DNS rebinding: a page on evil.example, its name resolved to 127.0.0.1, must
    not read /status through a browser; curl, Prometheus and the page itself can."""
    a = make("a", http="127.0.0.1:0", metadata={"secret_role": "db"})
    with started(a):
        where = http(a)
        port = split_address(where)[1]

        def ask(host: str | None) -> Any:
            head = "" if host is None else f"Host: {host}\r\n"
            return parse_reply(raw(where, f"GET /status HTTP/1.1\r\n{head}\r\n".encode()))

        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example",
                     "[::1", "", "localhost.evil.example:80", "127.0.0.1:80:80"):  # fmt: skip
            refused = ask(host)
            assert refused.status == 403, host
            assert b"secret_role" not in refused.body and b"Host header" in refused.body
        for host in (None, where, f"localhost:{port}", "LOCALHOST", f"[::1]:{port}",
                     "app.localhost", f"10.1.2.3:{port}"):  # fmt: skip
            assert ask(host).status == 200, host
        assert a.stats().get("http_rejected_host", 0) >= 7


def test_an_endpoint_on_another_address_answers_any_host() -> None:
    a = make("a", http="0.0.0.0:0")
    with started(a):
        port = split_address(http(a))[1]
        request = b"GET /health HTTP/1.1\r\nHost: node-a.cluster.local\r\n\r\n"
        assert parse_reply(raw(f"127.0.0.1:{port}", request)).status == 200


def test_the_page_is_self_contained() -> None:
    a = make("a", http="127.0.0.1:0")
    with started(a):
        page = get(http(a), "/")
        assert page.status == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert b'<script src="/page.js">' in page.body
        script = get(http(a), "/page.js")
        for text in (page.body, script.body):
            assert b"http://" not in text.replace(b"http://www.w3.org/2000/svg", b"")
            assert b"https://" not in text
        assert b"EventSource" in script.body and b"innerHTML" not in script.body


def test_the_http_port_in_use_stops_the_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        a = make("a", http=f"127.0.0.1:{port}")
        with pytest.raises(StartError, match="operations endpoint"):
            a.start_blocking()
        assert not a.running


def test_events_stream_membership_and_drops_clients_that_stop_reading() -> None:
    a, b = make("a", http="127.0.0.1:0"), make("b")
    with started(a, b):
        where = http(a)
        stream = EventStream(where)
        try:
            assert stream.status == 200 and "text/event-stream" in stream.head
            _, status = stream.next("status")
            assert status["node"] == A
            assert a.connect_blocking(dial_name(b))
            _, up = stream.next("nodeup")
            assert up["node"] == B and up["address"] == b.address
            assert a.disconnect_blocking(B)
            _, down = stream.next("nodedown")
            assert down == {"node": B, "reason": "disconnect", "time": down["time"]}
        finally:
            stream.close()

        # A client that stops reading: a small receive window, and never a recv().
        bus = a._bus
        eventually_blocking(lambda: bus.subscriber_count == 0, "the closed stream unsubscribed")
        baseline = 0
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(split_address(where))
        stuck.sendall(b"GET /events HTTP/1.1\r\n\r\n")
        eventually_blocking(
            lambda: bus.subscriber_count == baseline + 1, "the stuck stream subscribed"
        )
        # ~1 MB of events about distinct made-up nodes (nothing to compact)
        for i in range(2000):
            bus.publish(NodeUp(f"made-up{i}@127.0.0.1", "127.0.0.1:1", {"pad": "x" * 400}))
            if i % 100 == 0 and a.stats().get("http_events_dropped"):
                break
        eventually_blocking(
            lambda: a.stats().get("http_events_dropped") == 1, "stuck client dropped"
        )
        eventually_blocking(lambda: bus.subscriber_count == baseline, "its subscription ended")
        stuck.close()
        # the endpoint serves on, new streams included
        assert get(where, "/health").status == 200
        fresh = EventStream(where)
        try:
            _, status = fresh.next("status")
            assert status["node"] == A
        finally:
            fresh.close()


@async_test
async def test_the_endpoint_answers_while_the_application_loop_is_blocked() -> None:
    a = make("a", http="127.0.0.1:0")
    async with running(a):
        answers: list[int] = []
        client = threading.Thread(target=lambda: answers.append(get(http(a), "/status").status))
        client.start()
        client.join(10.0)  # blocks this (the application's) loop while the request runs
        assert answers == [200]
