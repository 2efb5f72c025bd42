"""skycluster.erlang.link between two Python sides on loopback: a link dialled and
accepted by the driver, and a hostile peer (the handshake core, then bad bytes)
whose link is closed with a reason while the accepting side lives on."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from agents import LOOPBACK, WITHIN
from erl_dist import drive

from skycluster.erlang import Atom, Pid
from skycluster.erlang.handshake import ErlangHandshake, Established, HandshakeError, Status
from skycluster.erlang.link import ErlangLink, LinkRefused, accept, dial
from skycluster.erlang.messages import DistMessage, reg_send

COOKIE = b"loopback-cookie"
A, B = f"a@{LOOPBACK}", f"b@{LOOPBACK}"


class Acceptor:
    """What the accepting side saw: links (or handshake errors) as they came, the
    messages they handed over, and why each link ended."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.links: asyncio.Queue[ErlangLink | BaseException] = asyncio.Queue()
        self.received: asyncio.Queue[DistMessage] = asyncio.Queue()
        self.ended: asyncio.Queue[str] = asyncio.Queue()


@asynccontextmanager
async def acceptor(
    decide: Callable[..., Status] = lambda _: Status.OK,
    on_message: Callable[[ErlangLink, DistMessage], None] | None = None,
) -> AsyncIterator[Acceptor]:
    """A server whose connections run ``accept`` and then the link."""
    seen = Acceptor(0)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            link = await accept(
                reader,
                writer,
                name=B,
                cookie=COOKIE,
                creation=2,
                decide=decide,
                on_message=on_message or (lambda _, m: seen.received.put_nowait(m)),
            )
        except (HandshakeError, ConnectionError) as exc:
            seen.links.put_nowait(exc)
            return
        seen.links.put_nowait(link)
        seen.ended.put_nowait(await link.run())

    server = await asyncio.start_server(serve, LOOPBACK, 0)
    async with server:
        seen.port = server.sockets[0].getsockname()[1]
        yield seen


def test_two_python_sides_link_and_message() -> None:
    async def scenario() -> None:
        async with acceptor() as seen:
            link = await dial(LOOPBACK, seen.port, name=A, cookie=COOKIE, creation=1, expect=B)
            async with asyncio.TaskGroup() as tasks:
                runner = tasks.create_task(link.run())
                accepted = await asyncio.wait_for(seen.links.get(), WITHIN)
                assert isinstance(accepted, ErlangLink) and accepted.peer.name == A
                sender = Pid(Atom(A), 1, 0, 1)
                link.send(reg_send(sender, Atom("jobs"), (Atom("work"), b"x" * 100_000)))
                got = await asyncio.wait_for(seen.received.get(), WITHIN)
                assert got.payload == (Atom("work"), b"x" * 100_000)
                link.close()
                assert await runner == "closed"
            assert await asyncio.wait_for(seen.ended.get(), WITHIN) == "connection_closed"
            with pytest.raises(ConnectionError, match="closed"):
                link.send(reg_send(sender, Atom("jobs"), 1))

    asyncio.run(scenario())


def test_a_refused_name_and_a_wrong_cookie() -> None:
    async def scenario() -> None:
        async with acceptor(decide=lambda _: Status.NOT_ALLOWED) as seen:
            with pytest.raises(LinkRefused, match="not_allowed"):
                await dial(LOOPBACK, seen.port, name=A, cookie=COOKIE, creation=1)
            assert isinstance(await seen.links.get(), LinkRefused)
        async with acceptor() as seen:
            with pytest.raises(ConnectionError, match="closed the connection"):
                await dial(LOOPBACK, seen.port, name=A, cookie=b"other", creation=1)
            error = await seen.links.get()
            assert isinstance(error, HandshakeError) and "different cookies" in str(error)

    asyncio.run(scenario())


def test_a_silent_handshake_is_dropped_after_the_setup_time() -> None:
    # The dialled side never answers: a server that accepts and stays silent.
    async def silent() -> None:
        server = await asyncio.start_server(lambda r, w: None, LOOPBACK, 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            with pytest.raises(HandshakeError, match=r"no handshake within 0\.2 s"):
                await dial(LOOPBACK, port, name=A, cookie=COOKIE, creation=1, setup_time=0.2)

    asyncio.run(silent())


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (struct.pack(">I", 3) + b"p\x83\xff", "corrupted external term: unknown term tag 255"),
        (struct.pack(">I", 2**31), "corrupted external term: a frame of 2147483648 bytes"),
        (struct.pack(">I", 6) + b"p\x83h\x01j\x00", "corrupted external term"),
        (struct.pack(">I", 2) + b"D\x00", "corrupted external term: a message with an atom cache"),
        (
            struct.pack(">I", 1 + 1 + 2 * 1_000_000 + 1) + b"p\x83" + b"h\x01" * 1_000_000 + b"j",
            "corrupted external term: term nested deeper than 400 levels",
        ),
    ],
)
def test_bad_bytes_close_the_link_with_a_reason(
    garbage: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> str:
        async with acceptor() as seen:
            reader, writer = await asyncio.open_connection(LOOPBACK, seen.port)
            hostile = ErlangHandshake(initiator=True, name=A, creation=1, cookie=COOKIE)
            assert isinstance(await drive(hostile, reader, writer), Established)
            assert isinstance(await asyncio.wait_for(seen.links.get(), WITHIN), ErlangLink)
            writer.write(garbage)
            async with asyncio.timeout(WITHIN):
                assert await reader.read() == b""  # the acceptor closed the connection
                reason = await seen.ended.get()
            writer.close()
            # The acceptor lives on: a well-behaved peer links right after.
            good = await dial(LOOPBACK, seen.port, name="c@127.0.0.1", cookie=COOKIE, creation=1)
            good.close()
            return reason

    with caplog.at_level(logging.WARNING, logger="skycluster.erlang"):
        got = asyncio.run(scenario())
    assert got.startswith(reason), got
    assert any("corrupted external term" in r.getMessage() for r in caplog.records)


def test_a_handler_that_raises_closes_its_link_only(caplog: pytest.LogCaptureFixture) -> None:
    def broken(link: ErlangLink, message: DistMessage) -> None:
        raise KeyError(message.payload)

    async def scenario() -> str:
        async with acceptor(on_message=broken) as seen:
            link = await dial(LOOPBACK, seen.port, name=A, cookie=COOKIE, creation=1)
            link.send(reg_send(Pid(Atom(A), 1, 0, 1), Atom("jobs"), 1))
            async with asyncio.TaskGroup() as tasks:
                runner = tasks.create_task(link.run())
                reason = await asyncio.wait_for(seen.ended.get(), WITHIN)
                assert await asyncio.wait_for(runner, WITHIN) == "connection_closed"
            again = await dial(LOOPBACK, seen.port, name=A, cookie=COOKIE, creation=1)
            again.close()
            return reason

    with caplog.at_level(logging.ERROR, logger="skycluster.erlang"):
        assert asyncio.run(scenario()) == "handler failed: KeyError"
    assert any("handler raised" in r.getMessage() for r in caplog.records)
