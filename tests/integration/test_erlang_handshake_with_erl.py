"""The Erlang handshake core against real ``erl`` nodes (Debian's erlang-base, OTP 25)
on loopback, through a private real ``epmd``: erl dials an acceptor driven by the
core, and the core dials erl (erl_dist.py moves the bytes)."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable, Iterator

import pytest
from agents import LOOPBACK, WITHIN, Process
from erl_dist import ERL, NEEDS_ERL, ErlNode, drive, wait_listening, wait_stdout
from local_host import Host

from skycluster.distribution.portmapper import lookup, register
from skycluster.erlang import flags as dflags
from skycluster.erlang.handshake import ErlangHandshake, Established, HandshakeError, Refused

pytestmark = NEEDS_ERL

COOKIE = "handshake-cookie"
PY = f"py@{LOOPBACK}"


def start_epmd(host: Host) -> None:
    epmd = host.helper("epmd", ["epmd", "-port", str(host.epmd_port), "-address", LOOPBACK])
    wait_listening(epmd, host.epmd_port)


def start_erl(host: Host, code: str, cookie: str) -> Process:
    """``erl -name erl@127.0.0.1`` on the host's epmd; ``code`` runs after start-up and
    reports on stderr (erl's own log lines go to stdout)."""
    argv = ["erl", "-name", ERL, "-noshell", "-start_epmd", "false", "-setcookie", cookie]
    return host.helper(
        "erl",
        [*argv, "-eval", code],
        ERL_EPMD_PORT=str(host.epmd_port),
        SKYCLUSTER_EPMD_PORT=None,
        ERL_CRASH_DUMP_SECONDS="0",
        HOME=str(host.tmp_path),
    )


def core(*, initiator: bool, cookie: str = COOKIE, **kwargs: object) -> ErlangHandshake:
    return ErlangHandshake(
        initiator=initiator,
        name=PY,
        creation=1234,
        cookie=cookie.encode(),
        **kwargs,  # type: ignore[arg-type]
    )


async def erl_dials_us(host: Host, cookie: str) -> tuple[Established | Exception, str]:
    """An acceptor registered as py@127.0.0.1; erl connects to it. Returns what the
    handshake gave and what erl said of it."""
    outcome: asyncio.Future[Established | Exception] = asyncio.get_running_loop().create_future()
    said = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            result = await drive(core(initiator=False, cookie=COOKIE), reader, writer)
            assert isinstance(result, Established)
            outcome.set_result(result)
            await said.wait()  # the link stays up until erl has reported it
        except (HandshakeError, ConnectionError) as exc:
            outcome.set_result(exc)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with await register("py", port, epmd_port=host.epmd_port):
            code = (
                f"R = net_kernel:connect_node('{PY}'), "
                'io:format(standard_error, "connect ~p ~p~n", [R, nodes()]).'
            )
            erl = start_erl(host, code, cookie)
            line = await asyncio.to_thread(erl.wait_for_log, "^connect ")
            said.set()
            return await asyncio.wait_for(outcome, WITHIN), line
    finally:
        server.close()
        await server.wait_closed()


def test_erl_dials_an_acceptor_driven_by_the_core(host: Host) -> None:
    start_epmd(host)
    result, line = asyncio.run(erl_dials_us(host, COOKIE))
    assert isinstance(result, Established), result
    assert line == f"connect true ['{PY}']"
    assert result.peer.name == ERL
    assert dflags.missing(result.peer.flags) == [], dflags.describe(result.peer.flags)
    assert result.flags & dflags.REQUIRED == dflags.REQUIRED


def test_erl_with_another_cookie_is_refused(host: Host) -> None:
    start_epmd(host)
    result, line = asyncio.run(erl_dials_us(host, "another-cookie"))
    assert isinstance(result, HandshakeError) and "different cookies" in str(result), result
    assert line == "connect false []"


MONITOR = (
    'net_kernel:monitor_nodes(true), io:format(standard_error, "ready~n", []), '
    "Loop = fun Loop() -> receive {nodeup, N} -> "
    'io:format(standard_error, "nodeup ~s ~p~n", [N, nodes()]), Loop(); _ -> Loop() end end, '
    "Loop()."
)


@pytest.fixture(scope="module")
def erl_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ErlNode]:
    node = ErlNode(tmp_path_factory.mktemp("erl"), MONITOR, COOKIE)
    try:
        yield node
    finally:
        node.close()


async def dial_erl(
    node: ErlNode, handshake: ErlangHandshake, hold: Callable[[], object] = lambda: None
) -> Established | Refused:
    """Dial erl through its epmd; ``hold`` (run in a thread) keeps an established link
    up until erl has reported what the test waits for."""
    port = await lookup(LOOPBACK, "erl", epmd_port=node.epmd_port)
    assert port is not None, "erl is not registered"
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        result = await asyncio.wait_for(drive(handshake, reader, writer), WITHIN)
        if isinstance(result, Established):
            await asyncio.to_thread(hold)
        return result
    finally:
        writer.close()


def test_the_core_dials_erl(erl_node: ErlNode) -> None:
    seen = len(erl_node.erl.logs("^nodeup "))

    def hold() -> None:
        deadline = time.monotonic() + WITHIN
        while len(erl_node.erl.logs("^nodeup ")) == seen:
            assert time.monotonic() < deadline, erl_node.erl.describe()
            time.sleep(0.05)

    result = asyncio.run(dial_erl(erl_node, core(initiator=True, expect=ERL), hold))
    assert isinstance(result, Established), result
    assert result.peer.name == ERL and dflags.missing(result.peer.flags) == []
    assert erl_node.erl.logs("^nodeup ")[seen] == f"nodeup {PY} ['{PY}']"


def test_erl_refuses_the_core_with_another_cookie(erl_node: ErlNode) -> None:
    with pytest.raises(ConnectionError, match="closed the connection while challenge_ack"):
        asyncio.run(dial_erl(erl_node, core(initiator=True, cookie="another-cookie", expect=ERL)))
    assert "Invalid challenge reply" in wait_stdout(erl_node.erl, "Invalid challenge reply")


def test_erl_drops_an_old_name_message(erl_node: ErlNode) -> None:
    """What OTP 25 does with a version-5 peer, that the core refuses the same way."""

    async def old_hello() -> bytes:
        port = await lookup(LOOPBACK, "erl", epmd_port=erl_node.epmd_port)
        assert port is not None
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        body = struct.pack(">cHI", b"n", 5, int(dflags.MANDATORY_25) & 0xFFFFFFFF) + PY.encode()
        writer.write(struct.pack(">H", len(body)) + body)
        try:
            return await asyncio.wait_for(reader.read(), WITHIN)
        finally:
            writer.close()

    assert asyncio.run(old_hello()) == b""  # closed, no status


def test_erl_refuses_a_peer_without_the_otp_25_flags(erl_node: ErlNode) -> None:
    old_flags = int(dflags.BASE & ~dflags.Flag.HANDSHAKE_23 & ~dflags.Flag.MANDATORY_25_DIGEST)
    handshake = core(initiator=True, flags=old_flags, required=0)
    assert asyncio.run(dial_erl(erl_node, handshake)) == Refused("not_allowed")
    assert 'cannot handle ["HANDSHAKE_23"]' in wait_stdout(erl_node.erl, "cannot handle")
