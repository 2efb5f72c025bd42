"""A skycluster node with ``erlang=True`` and a real ``erl`` (OTP 25), through a
private real epmd: erl dials the Python node by name and pings it, both list each
other, messages go both ways between a Python mailbox and an Erlang registered
process, the Python node dials erl by name, NodeUp/NodeDown carry Erlang's
reasons, a wrong cookie is refused, bad bytes close only their link, and skycluster
links keep working on the same port."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import erl_dist
import pytest
from agents import LOOPBACK, WITHIN
from erl_dist import ERL, NEEDS_ERL, ErlNode

from skycluster import Cluster, NodeDown, NodeUp
from skycluster.distribution.epmd_protocol import SKYCLUSTER_EXTRA
from skycluster.distribution.portmapper import lookup_node
from skycluster.erlang import Atom, ImproperList
from skycluster.erlang.link import ErlangLink, dial
from skycluster.erlang.messages import DistMessage, reg_send
from skycluster.erlang.values import Pid

pytestmark = NEEDS_ERL

COOKIE = "node-cookie"
PY = f"py@{LOOPBACK}"
TICKTIME = 4  # both sides: erl ticks every second and gives a silent peer up after ~4 s
SLACK = WITHIN + 2 * TICKTIME

# ctl: what the test asks of erl; Watch: erl's view of its links, on stderr.
ERL_CODE = (
    "net_kernel:monitor_nodes(true, [nodedown_reason]), "
    "register(ctl, spawn(fun Ctl() -> receive "
    "  {to_jobs, Msg} -> {jobs, '" + PY + "'} ! Msg, Ctl(); "
    "  {to, Name, Msg} -> {Name, '" + PY + "'} ! Msg, Ctl(); "
    "  which_nodes -> "
    '    io:format(standard_error, "nodes ~p ~p~n", [nodes(), nodes(hidden)]), Ctl(); '
    "  {echo, Msg} -> {jobs, '" + PY + "'} ! {echoed, Msg}, Ctl() end end)), "
    "PING "
    'io:format(standard_error, "ready~n", []), '
    "Watch = fun Watch() -> receive "
    '  {nodeup, N, _} -> io:format(standard_error, "nodeup ~s~n", [N]), Watch(); '
    "  {nodedown, N, Info} -> "
    '    io:format(standard_error, "nodedown ~s ~p~n", '
    "              [N, proplists:get_value(nodedown_reason, Info)]), Watch() end end, "
    "Watch()."
)
# erl pings the Python node until it answers (it starts after erl).
PINGS = (
    "spawn(fun Ping() -> case net_adm:ping('" + PY + "') of "
    '  pong -> io:format(standard_error, "pong~n", []); '
    "  pang -> timer:sleep(200), Ping() end end), "
)


def erl(tmp: Path, *, pings: bool, cookie: str = COOKIE) -> ErlNode:
    code = ERL_CODE.replace("PING ", PINGS if pings else "")
    return ErlNode(tmp, code, cookie, ["-kernel", "net_ticktime", str(TICKTIME)])


@pytest.fixture
def erl_dialling(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ErlNode]:
    node = erl(tmp_path_factory.mktemp("erl"), pings=True)
    try:
        yield node
    finally:
        node.close()


@pytest.fixture
def erl_waiting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ErlNode]:
    node = erl(tmp_path_factory.mktemp("erl"), pings=False)
    try:
        yield node
    finally:
        node.close()


def python_node(epmd_port: int, name: str = PY, **options: Any) -> Cluster:
    return erl_dist.python_node(epmd_port, name, COOKIE, **{"erlang_ticktime": TICKTIME, **options})


async def next_event(subscription: Any, kind: type, node: str, within: float = WITHIN) -> Any:
    async with asyncio.timeout(within):
        while True:
            event = await subscription.get()
            if isinstance(event, kind) and event.node == node:
                return event


async def until(condition: Callable[[], bool], within: float = WITHIN) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - a counter has no event to wait on
            await asyncio.sleep(0.05)


def framed(term: bytes) -> bytes:
    """A pass-through distribution message whose control message is ``term``."""
    return struct.pack(">IB", len(term) + 1, 112) + term


def counted(cluster: Cluster, counter: str, at_least: int) -> Callable[[], bool]:
    return lambda: cluster.stats().get(counter, 0) >= at_least


def wait_log(node: ErlNode, pattern: str) -> str:
    return node.erl.wait_for_log(pattern, timeout=SLACK)


@pytest.mark.parametrize("node_loop", ["auto", "asyncio"])
def test_erl_dials_pings_and_messages_a_python_node(erl_dialling: ErlNode, node_loop: str) -> None:
    async def scenario() -> None:
        async with python_node(erl_dialling.epmd_port, node_loop=node_loop) as py:
            events = py.subscribe(initial=True)
            jobs = py.register("jobs")
            # The registration is the one an Erlang node expects, marked as skycluster's.
            found = await lookup_node(LOOPBACK, "py", epmd_port=erl_dialling.epmd_port)
            assert found is not None
            assert (found.highest_version, found.lowest_version) == (6, 6)
            assert found.extra == SKYCLUSTER_EXTRA

            await asyncio.to_thread(wait_log, erl_dialling, "^pong$")  # net_adm:ping
            up = await next_event(events, NodeUp, ERL)
            assert up.node == ERL and ERL in py.nodes()
            await asyncio.to_thread(wait_log, erl_dialling, f"^nodeup {PY}$")
            await py.send(ERL, "ctl", Atom("which_nodes"))
            line = await asyncio.to_thread(wait_log, erl_dialling, "^nodes ")
            assert line == f"nodes ['{PY}'] []"

            # Erlang -> a Python mailbox, decoded by the table; and back.
            term = (Atom("hello"), b"from erl", 42, [2, 40], {Atom("k"): 1.5})
            await py.send(ERL, "ctl", (Atom("to_jobs"), term))
            async with asyncio.timeout(WITHIN):
                assert await jobs.get() == term
            sent = [ImproperList((1, 2), Atom("t")), "text", -(2**70), (), []]
            await py.send(ERL, "ctl", (Atom("echo"), sent))
            async with asyncio.timeout(WITHIN):
                got = await jobs.get()
            back = [ImproperList((1, 2), Atom("t")), b"text", -(2**70), (), []]  # str: a binary
            assert got == (Atom("echoed"), back)

            # A message to a name nobody registered is dropped, counted; the link lives.
            await py.send(ERL, "ctl", (Atom("to"), Atom("nobody"), Atom("lost")))
            await py.send(ERL, "ctl", (Atom("to_jobs"), Atom("after")))
            async with asyncio.timeout(WITHIN):
                assert await jobs.get() == Atom("after")
            stats = py.stats()
            assert stats["erlang_messages_dropped"] == 1 and stats["erlang_links_up"] == 1

            # erl stops (SIGSTOP): the Python node gives it up by Erlang's tick rule.
            os.kill(erl_dialling.erl.proc.pid, signal.SIGSTOP)
            try:
                down = await next_event(events, NodeDown, ERL, within=SLACK)
            finally:
                os.kill(erl_dialling.erl.proc.pid, signal.SIGCONT)
            assert down.reason == "net_tick_timeout" and ERL not in py.nodes()

    asyncio.run(scenario())


def test_a_python_node_dials_erl_by_name_beside_skycluster_links(erl_waiting: ErlNode) -> None:
    """connect("erl@...") dials Erlang's handshake (epmd's entry has no skycluster
    mark); a skycluster node linking on the same port still gets a skycluster link."""

    async def scenario() -> None:
        epmd_port = erl_waiting.epmd_port
        async with (
            python_node(epmd_port) as py,
            python_node(epmd_port, f"other@{LOOPBACK}", erlang=False) as other,
        ):
            events = py.subscribe()
            assert await py.connect(ERL)
            await next_event(events, NodeUp, ERL)
            await asyncio.to_thread(wait_log, erl_waiting, f"^nodeup {PY}$")
            # A skycluster peer: dialled by name through the same epmd, and dialling us.
            assert await py.connect(f"other@{LOOPBACK}")
            box = other.register("box")
            await py.send(f"other@{LOOPBACK}", "box", {"plain": "msgpack"})
            async with asyncio.timeout(WITHIN):
                assert await box.get() == {"plain": "msgpack"}
            assert sorted(py.nodes()) == sorted([ERL, f"other@{LOOPBACK}"])
            assert py.stats().get("erlang_links_up") == 1

            assert await py.disconnect(ERL)
            down = await next_event(events, NodeDown, ERL)
            assert down.reason == "disconnect"
            line = await asyncio.to_thread(wait_log, erl_waiting, "^nodedown ")
            assert line == f"nodedown {PY} connection_closed"
            assert await py.connect(ERL)  # and again
            await next_event(events, NodeUp, ERL)
        # The node stopped: erl sees the link go.
        await asyncio.to_thread(erl_waiting.erl.wait_for_log, f"^nodedown {PY} ", SLACK)

    asyncio.run(scenario())


def test_hidden_python_node(erl_waiting: ErlNode) -> None:
    async def scenario() -> None:
        async with python_node(erl_waiting.epmd_port, hidden=True) as py:
            assert await py.connect(ERL)
            await py.send(ERL, "ctl", Atom("which_nodes"))
            line = await asyncio.to_thread(wait_log, erl_waiting, "^nodes ")
            assert line == f"nodes [] ['{PY}']"

    asyncio.run(scenario())


def test_a_wrong_cookie_is_refused_with_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = erl(tmp_path, pings=True, cookie="another-cookie")
    try:

        async def scenario() -> dict[str, int]:
            async with python_node(node.epmd_port) as py:
                await until(counted(py, "erlang_handshakes_failed", 1), SLACK)
                assert not await py.connect(ERL)
                assert py.nodes() == []
                return py.stats()

        with caplog.at_level(logging.WARNING, logger="skycluster.erlang"):
            stats = asyncio.run(scenario())
        assert stats["erlang_handshakes_failed"] >= 1
        lines = [r.getMessage() for r in caplog.records if "different cookies" in r.getMessage()]
        assert lines and all(ERL in line for line in lines)
        assert not node.erl.logs("^pong$")
    finally:
        node.close()


def test_bad_bytes_close_only_their_link(erl_waiting: ErlNode) -> None:
    """A peer that passes the handshake and then sends an unknown control message
    (dropped, counted), a 2 GB length, a truncated term or one nested a million deep
    (its link closed, counted), or an atom flood (dropped): the node goes on, and
    erl's link with it too."""

    async def evil(py: Cluster) -> ErlangLink:
        assert py.address is not None
        host, port = py.address.rsplit(":", 1)
        return await dial(
            host, int(port), name=f"evil@{LOOPBACK}", cookie=COOKIE.encode(), creation=7
        )

    async def scenario() -> None:
        async with python_node(erl_waiting.epmd_port) as py:
            events = py.subscribe()
            assert await py.connect(ERL)
            evil_name = f"evil@{LOOPBACK}"
            me = Pid(Atom(evil_name), 1, 0, 7)
            for bad in (
                struct.pack(">I", 2**31),  # a 2 GB frame
                struct.pack(">IB", 3, 112) + b"\x83h",  # a truncated term
                struct.pack(">IB", 2, 112) + b"\x83",
                framed(b"\x83" + b"h\x01" * 1_000_000),  # a tuple nested a million deep
            ):
                link = await evil(py)
                await next_event(events, NodeUp, evil_name)
                expected = py.stats().get("erlang_messages_dropped", 0) + 2
                link.send(DistMessage((99, Atom("what"))))  # unknown: dropped
                link.send(reg_send(me, Atom("jobs"), "nobody is jobs"))  # dropped
                runner = asyncio.ensure_future(link.run())
                await until(counted(py, "erlang_messages_dropped", expected))
                link.send_encoded(bad)
                down = await next_event(events, NodeDown, evil_name)
                assert down.reason == "protocol_error"
                async with asyncio.timeout(WITHIN):
                    await runner
            stats = py.stats()
            assert stats["erlang_protocol_errors"] == 4
            assert stats["erlang_messages_dropped"] == 8
            # An atom flood to a name nobody registered: dropped, the link stays.
            link = await evil(py)
            await next_event(events, NodeUp, evil_name)
            runner = asyncio.ensure_future(link.run())
            flood = [Atom(f"atom_{i}") for i in range(100_000)]
            link.send(reg_send(me, Atom("nobody"), flood))
            await until(counted(py, "erlang_messages_dropped", 9))
            assert evil_name in py.nodes()
            link.close()
            await runner
            assert ERL in py.nodes()
            await py.send(ERL, "ctl", Atom("which_nodes"))
            await asyncio.to_thread(wait_log, erl_waiting, "^nodes ")

    asyncio.run(scenario())


def test_an_old_name_message_is_refused_with_one_line(
    erl_waiting: ErlNode, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer speaking distribution version 5 (the old ``n`` name message, OTP 22 and
    before) on the node's port: one clear line, a counter, the connection closed."""

    async def scenario() -> dict[str, int]:
        async with python_node(erl_waiting.epmd_port) as py:
            assert py.address is not None
            host, port = py.address.rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            name = f"old@{LOOPBACK}".encode()
            body = b"n" + struct.pack(">HI", 5, 0x7FFFD) + name
            writer.write(struct.pack(">H", len(body)) + body)
            async with asyncio.timeout(WITHIN):
                while await reader.read(100):
                    pass  # until the node closes it
            writer.close()
            await until(counted(py, "erlang_handshakes_failed", 1))
            assert await py.connect(ERL)  # the node goes on
            return py.stats()

    with caplog.at_level(logging.WARNING, logger="skycluster.erlang"):
        stats = asyncio.run(scenario())
    assert stats["erlang_handshakes_failed"] == 1
    lines = [r.getMessage() for r in caplog.records if "old name message" in r.getMessage()]
    assert len(lines) == 1 and "version 6 only" in lines[0], lines
