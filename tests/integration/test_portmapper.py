"""Our port mapper server with our client, on loopback, on ephemeral ports."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar, cast

import pytest

from skycluster.distribution.epmd_protocol import (
    Alive2Request,
    NamesRequest,
    RegisteredNode,
    decode_alive2_response,
    encode_request,
)
from skycluster.distribution.portmapper import (
    NameTaken,
    PortMapperError,
    PortMapperServer,
    PortMapperSettings,
    PortMapperUnavailable,
    _is_local_peer,
    epmd_port_from_env,
    lookup,
    lookup_node,
    names,
    register,
)

LOOPBACK = "127.0.0.1"
LOGGER = "skycluster.portmapper"
T = TypeVar("T")


def async_test(
    fn: Callable[..., Coroutine[Any, Any, None]],
) -> Callable[..., None]:
    """Run an async test body in a fresh event loop, with a generous overall bound."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        async def bounded() -> None:
            async with asyncio.timeout(30):  # not wait_for: that would add a task of its own
                await fn(*args, **kwargs)

        asyncio.run(bounded())

    return wrapper


@contextlib.asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[PortMapperServer]:
    async with PortMapperServer(PortMapperSettings(port=0, **options)) as server:
        yield server


async def eventually(check: Callable[[], Awaitable[T]], *, within: float = 5.0) -> T:
    """Poll ``check`` until it is truthy: for state that changes when another socket closes."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            assert result, f"condition not met within {within} s"
            return result
        await asyncio.sleep(0.01)


async def raw_connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(LOOPBACK, port)


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends before it closes (a reset counts as a close)."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := await reader.read(65536):
            data += chunk
    return data


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def alive2(name: str, port: int = 5000, **fields: Any) -> bytes:
    return encode_request(Alive2Request(RegisteredNode(name, port, **fields)))


def server_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


# --- the happy path ---------------------------------------------------------------------------


@async_test
async def test_register_lookup_and_names() -> None:
    async with serving() as server:
        p = server.port
        async with (
            await register("api", 9100, epmd_port=p) as api,
            await register("tool", 9200, epmd_port=p, hidden=True) as tool,
        ):
            assert api.creation >= 4 and tool.creation >= 4  # 32-bit creations (ALIVE2_X_RESP)
            assert await lookup(LOOPBACK, "api", epmd_port=p) == 9100
            assert await lookup(LOOPBACK, "missing", epmd_port=p) is None
            node = await lookup_node(LOOPBACK, "tool", epmd_port=p)
            assert node == RegisteredNode("tool", 9200, node_type=72)
            assert node is not None and node.hidden
            assert sorted(await names(LOOPBACK, epmd_port=p)) == [("api", 9100), ("tool", 9200)]
            assert {n.name for n in server.registrations} == {"api", "tool"}
            assert "open" in repr(api)
        assert api.closed
        await eventually(lambda: _no_names(p))


async def _no_names(port: int) -> bool:
    return await names(LOOPBACK, epmd_port=port) == []


@async_test
async def test_unicode_names_round_trip() -> None:
    async with serving() as server, await register("nœud-\u00e9", 1234, epmd_port=server.port):
        assert await lookup(LOOPBACK, "nœud-\u00e9", epmd_port=server.port) == 1234
        assert await names(LOOPBACK, epmd_port=server.port) == [("nœud-\u00e9", 1234)]


@async_test
async def test_extra_field_and_versions_are_returned_verbatim() -> None:
    async with serving() as server:
        reader, writer = await raw_connect(server.port)
        writer.write(
            alive2("c", 7000, node_type=72, highest_version=6, lowest_version=6, extra=b"\0x")
        )
        assert decode_alive2_response(await reader.readexactly(6)).ok
        assert await lookup_node(LOOPBACK, "c", epmd_port=server.port) == RegisteredNode(
            "c", 7000, 72, 0, 6, 6, b"\0x"
        )
        await close(writer)


@async_test
async def test_version_5_node_gets_16_bit_creation_in_alive2_resp() -> None:
    async with serving() as server:
        reader, writer = await raw_connect(server.port)
        writer.write(alive2("old", highest_version=5, lowest_version=5))
        reply = await reader.readexactly(4)
        assert reply[:2] == bytes([121, 0])  # ALIVE2_RESP, ok
        assert decode_alive2_response(reply).creation in (1, 2, 3)
        await close(writer)


# --- registration lifetime --------------------------------------------------------------------


@async_test
async def test_registration_ends_when_its_connection_closes() -> None:
    async with serving() as server:
        first = await register("api", 9100, epmd_port=server.port)
        await first.close()
        await first.close()  # idempotent
        await eventually(lambda: _no_names(server.port))
        # A new incarnation of the same name gets the next creation, as with epmd.
        async with await register("api", 9101, epmd_port=server.port) as second:
            assert second.creation == first.creation + 1
            assert await lookup(LOOPBACK, "api", epmd_port=server.port) == 9101


@async_test
async def test_duplicate_live_name_is_refused() -> None:
    async with serving() as server:
        first = await register("api", 9100, epmd_port=server.port)
        with pytest.raises(NameTaken, match=r"'api'.*already holds it"):
            await register("api", 9999, epmd_port=server.port)
        assert await names(LOOPBACK, epmd_port=server.port) == [("api", 9100)]
        # The refused attempt's reply on the wire: ALIVE2_X_RESP, result 1, creation 99 (epmd's).
        reader, writer = await raw_connect(server.port)
        writer.write(alive2("api"))
        assert await reader.readexactly(6) == bytes([118, 1, 0, 0, 0, 99])
        assert await read_until_closed(reader) == b""  # and the connection is closed
        await close(writer)
        await first.close()
        await eventually(lambda: _no_names(server.port))
        async with await register("api", 9999, epmd_port=server.port):
            assert await lookup(LOOPBACK, "api", epmd_port=server.port) == 9999


@async_test
async def test_bytes_after_a_registration_end_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with serving() as server:
        reader, writer = await raw_connect(server.port)
        writer.write(alive2("one"))
        assert decode_alive2_response(await reader.readexactly(6)).ok
        writer.write(alive2("two"))  # a second registration on the same connection
        assert await read_until_closed(reader) == b""
        await close(writer)
        assert await names(LOOPBACK, epmd_port=server.port) == []
        assert any("after registering 'one'" in m for m in server_log(caplog))


@async_test
async def test_thousands_of_registrations_from_one_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with serving() as server:
        reader, writer = await raw_connect(server.port)
        writer.write(b"".join(alive2(f"n{i}", 10000 + i) for i in range(5000)))
        with contextlib.suppress(OSError):  # the server may reset us mid-write
            await writer.drain()
        assert await read_until_closed(reader) == b""  # closed without registering any
        await close(writer)
        assert await names(LOOPBACK, epmd_port=server.port) == []
        assert sum("more than one request" in m for m in server_log(caplog)) == 1
        # Many registrations each on their own connection are fine, up to max_connections.
        regs = await asyncio.gather(
            *(register(f"m{i}", 20000 + i, epmd_port=server.port) for i in range(200))
        )
        assert len(await names(LOOPBACK, epmd_port=server.port)) == 200
        await asyncio.gather(*(r.close() for r in regs))
        await eventually(lambda: _no_names(server.port))


# --- bad input --------------------------------------------------------------------------------


def _frame(body: bytes) -> bytes:
    return struct.pack(">H", len(body)) + body


def _alive2_body(name: bytes, name_len: int | None = None) -> bytes:
    nlen = len(name) if name_len is None else name_len
    return bytes.fromhex("78 1388 4d 00 0006 0005") + struct.pack(">H", nlen) + name + b"\0\0"


MALFORMED = {
    "truncated": (alive2("x")[:-3], "truncated request"),
    "oversized frame": (b"\xff\xff" + b"a" * 100, "oversized request"),
    "oversized name": (_frame(_alive2_body(b"a" * 256)), "256 characters"),
    "non-UTF-8 name": (_frame(_alive2_body(b"\xc3\x28")), "not valid UTF-8"),
    "non-UTF-8 lookup": (_frame(b"z\xff"), "not valid UTF-8"),
    "unknown request": (_frame(b"k"), "unknown request code 107"),
    "length mismatch": (_frame(_alive2_body(b"x", name_len=9)), "runs past the end"),
    "empty frame": (b"\0\0", "empty request"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
@async_test
async def test_malformed_request_closes_only_that_connection(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    data, reason = MALFORMED[case]
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with serving() as server, await register("keep", 4000, epmd_port=server.port):
        reader, writer = await raw_connect(server.port)
        client = "{}:{}".format(*writer.get_extra_info("sockname"))
        writer.write(data)
        writer.write_eof()  # so that a truncated request ends here
        assert await read_until_closed(reader) == b""  # no reply, just a close
        await close(writer)
        logged = [m for m in server_log(caplog) if client in m]
        assert len(logged) == 1 and reason in logged[0], logged
        # Everyone else is still served.
        assert await names(LOOPBACK, epmd_port=server.port) == [("keep", 4000)]


@async_test
async def test_silent_client_is_closed_after_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with serving(request_timeout=0.5) as server:
        started = time.monotonic()
        silent_reader, silent = await raw_connect(server.port)
        dribble_reader, dribble = await raw_connect(server.port)
        dribble.write(alive2("slow")[:3])  # starts a request and never finishes it
        # Meanwhile others are served.
        async with await register("busy", 4000, epmd_port=server.port):
            assert await lookup(LOOPBACK, "busy", epmd_port=server.port) == 4000
        assert await read_until_closed(silent_reader) == b""
        assert await read_until_closed(dribble_reader) == b""
        assert 0.4 < time.monotonic() - started < 5
        assert sum("no complete request within 0.5 s" in m for m in server_log(caplog)) == 2
        await close(silent)
        await close(dribble)
        assert await names(LOOPBACK, epmd_port=server.port) == []


@async_test
async def test_connections_beyond_max_connections_are_closed() -> None:
    async with serving(max_connections=3, request_timeout=20) as server:
        held = [await raw_connect(server.port) for _ in range(3)]

        async def all_held() -> bool:
            return server.connections == 3

        await eventually(all_held)
        with pytest.raises(PortMapperError, match="closed the connection without answering"):
            await names(LOOPBACK, epmd_port=server.port)
        await close(held.pop()[1])

        async def served() -> bool:
            with contextlib.suppress(PortMapperError):
                return await names(LOOPBACK, epmd_port=server.port) == []
            return False

        await eventually(served)
        for _, writer in held:
            await close(writer)


# --- lifecycle --------------------------------------------------------------------------------


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@async_test
async def test_stop_leaves_no_task_and_no_socket() -> None:
    before = _open_fds()
    server = PortMapperServer(PortMapperSettings(port=0, request_timeout=20))
    await server.start()
    port = server.port
    registration = await register("api", 9100, epmd_port=port)
    silent_reader, silent = await raw_connect(port)
    await eventually(lambda: _true_if(server.connections == 2))
    await server.stop()
    await server.stop()  # idempotent
    assert asyncio.all_tasks() == {asyncio.current_task()}
    # The server closed both connections: the clients see EOF.
    assert await read_until_closed(silent_reader) == b""
    assert await read_until_closed(registration._reader) == b""
    await registration.close()
    await close(silent)
    assert _open_fds() <= before
    with pytest.raises(PortMapperUnavailable):
        await names(LOOPBACK, epmd_port=port, timeout=1)
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.port


async def _true_if(value: bool) -> bool:
    return value


@async_test
async def test_start_twice_and_port_in_use() -> None:
    async with serving() as server:
        with pytest.raises(RuntimeError, match="already started"):
            await server.start()
        other = PortMapperServer(PortMapperSettings(port=server.port))
        with pytest.raises(OSError, match=r"cannot listen on 127\.0\.0\.1:\d+.*epmd -kill"):
            await other.start()
        await other.stop()


def test_config_errors_name_the_option() -> None:
    with pytest.raises(ValueError, match="max_connections=0"):
        PortMapperSettings(max_connections=0)
    with pytest.raises(ValueError, match="request_timeout=0"):
        PortMapperSettings(request_timeout=0)
    with pytest.raises(ValueError, match="port=70000"):
        PortMapperSettings(port=70000)


# --- client errors ----------------------------------------------------------------------------


@async_test
async def test_nothing_listening_is_unavailable() -> None:
    port = free_port()
    with pytest.raises(PortMapperUnavailable, match=rf"no port mapper at 127\.0\.0\.1:{port}"):
        await names(LOOPBACK, epmd_port=port)
    with pytest.raises(PortMapperUnavailable, match="SKYCLUSTER_EPMD_PORT"):
        await register("api", 1, epmd_port=port)
    with pytest.raises(PortMapperUnavailable):
        await lookup(LOOPBACK, "api", epmd_port=port)


@async_test
async def test_a_port_mapper_that_never_answers_times_out() -> None:
    with socket.socket() as listener:  # accepts in the kernel backlog, never replies
        listener.bind((LOOPBACK, 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(PortMapperUnavailable, match=r"did not answer NamesRequest within 0\.2"):
            await names(LOOPBACK, epmd_port=port, timeout=0.2)
        with pytest.raises(PortMapperUnavailable, match="did not answer the registration"):
            await register("api", 1, epmd_port=port, timeout=0.2)


async def _fake_port_mapper(reply: bytes) -> tuple[int, asyncio.Task[None]]:
    """A one-shot server that reads one request and answers ``reply``, then closes."""
    loop = asyncio.get_running_loop()
    listener = socket.socket()
    listener.bind((LOOPBACK, 0))
    listener.listen()
    listener.setblocking(False)

    async def serve_once() -> None:
        with listener:
            conn, _ = await loop.sock_accept(listener)
            with conn:
                await loop.sock_recv(conn, 4096)
                await loop.sock_sendall(conn, reply)

    return listener.getsockname()[1], asyncio.create_task(serve_once())


@pytest.mark.parametrize(
    ("call", "reply", "message"),
    [
        ("register", b"\x00", "invalid ALIVE2 reply: unexpected reply code 0"),
        ("register", b"\x76\x00", "without answering the registration"),
        ("lookup", b"\x77\x00\x13", "invalid PORT2_RESP"),
        ("names", b"\x00\x00\x11\x11garbage\n", "invalid NAMES reply"),
    ],
)
@async_test
async def test_garbage_replies_raise_port_mapper_error(
    call: str, reply: bytes, message: str
) -> None:
    port, task = await _fake_port_mapper(reply)
    with pytest.raises(PortMapperError, match=message):
        if call == "register":
            await register("api", 1, epmd_port=port)
        elif call == "lookup":
            await lookup(LOOPBACK, "api", epmd_port=port)
        else:
            await names(LOOPBACK, epmd_port=port)
    await task


@async_test
async def test_bad_arguments_fail_before_any_io() -> None:
    port = free_port()  # nothing listens: a ValueError proves no connection was tried
    with pytest.raises(ValueError, match="port=0: use the node's listen port"):
        await register("api", 0, epmd_port=port)
    with pytest.raises(ValueError, match="node name is empty"):
        await register("", 1, epmd_port=port)
    with pytest.raises(ValueError, match="NUL or a line break"):
        await lookup(LOOPBACK, "a\nb", epmd_port=port)


@async_test
async def test_names_request_on_the_wire_matches_epmd() -> None:
    async with serving() as server, await register("x", 5000, epmd_port=server.port):
        reader, writer = await raw_connect(server.port)
        writer.write(encode_request(NamesRequest()))
        reply = await read_until_closed(reader)
        await close(writer)
        assert reply == struct.pack(">I", server.port) + b"name x at port 5000\n"


# --- environment ------------------------------------------------------------------------------


def test_epmd_port_from_env() -> None:
    assert epmd_port_from_env({}) == 4369
    assert epmd_port_from_env({"ERL_EPMD_PORT": "4400"}) == 4400
    assert epmd_port_from_env({"SKYCLUSTER_EPMD_PORT": " 4500 ", "ERL_EPMD_PORT": "4400"}) == 4500
    assert epmd_port_from_env({"SKYCLUSTER_EPMD_PORT": "", "ERL_EPMD_PORT": "4400"}) == 4400
    assert isinstance(epmd_port_from_env(), int)


@pytest.mark.parametrize("value", ["abc", "0", "65536", "-1", "43.5", "\u0663"])
@pytest.mark.parametrize("var", ["SKYCLUSTER_EPMD_PORT", "ERL_EPMD_PORT"])
def test_epmd_port_from_env_rejects(var: str, value: str) -> None:
    with pytest.raises(ValueError) as info:
        epmd_port_from_env({var: value})
    message = str(info.value)
    assert var in message and repr(value) in message and "from 1 to 65535" in message


# --- who may register -------------------------------------------------------------------------


class _FakeSocket:
    def __init__(self, local_ip: str) -> None:
        self.local_ip = local_ip

    def getsockname(self) -> tuple[str, int]:
        return (self.local_ip, 4369)


@pytest.mark.parametrize(
    ("local", "peer", "allowed"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.1", "127.1.2.3", True),  # all of 127/8 is loopback
        ("::1", "::1", True),
        ("::", "::ffff:127.0.0.1", True),
        ("10.0.0.1", "10.0.0.1", True),  # our own address: the same host
        ("10.0.0.1", "10.0.0.2", False),
        ("::", "fe80::2", False),
    ],
)
def test_only_this_host_may_register_like_epmd(local: str, peer: str, allowed: bool) -> None:
    fake = cast(socket.socket, _FakeSocket(local))
    assert _is_local_peer(fake, (peer, 40000)) is allowed
    assert _is_local_peer(fake, "not-an-ip-peer") is False
