"""A connected Erlang distribution link with a real ``erl`` (OTP 25), driven by the
cores without I/O (handshake, messages, ticks) and a thin asyncio loop of this test:
messages both ways (``{echo, 'erl@...'} ! Msg``, ``{py_mbox, 'py@...'} ! Msg``, a
reply to a pid), ticks at a short ``net_ticktime`` that keep the link up, and both
sides' verdicts when the other goes silent."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from agents import LOOPBACK, WITHIN
from erl_dist import ERL, ErlNode, drive

from skycluster.distribution.portmapper import lookup
from skycluster.erlang import Atom, Pid
from skycluster.erlang.handshake import ErlangHandshake, Established
from skycluster.erlang.messages import TICK, Control, DistMessage, FrameReader, encode, reg_send
from skycluster.erlang.ticks import TickPolicy, Verdict

pytestmark = [
    pytest.mark.erlang,
    pytest.mark.skipif(
        shutil.which("epmd") is None or shutil.which("erl") is None,
        reason="needs Debian's erlang-base for the real epmd and erl: apt-get install erlang-base",
    ),
]

COOKIE = "link-cookie"
PY = f"py@{LOOPBACK}"
CREATION = 4321
ME = Pid(Atom(PY), 1, 0, CREATION)  # erl drops messages to a pid of another creation
TICKTIME = 4  # erl ticks every second and gives a silent peer up after about 4 s

ERL_CODE = (
    "net_kernel:monitor_nodes(true, [nodedown_reason]), "
    "register(echo, spawn(fun Echo() -> receive "
    "  {From, {send_to_py, Name, Msg}} -> {Name, node(From)} ! Msg, Echo(); "
    "  {From, M} -> From ! {echoed, M}, Echo() end end)), "
    'io:format(standard_error, "ready~n", []), '
    "Watch = fun Watch() -> receive "
    '  {nodeup, N, _} -> io:format(standard_error, "nodeup ~s~n", [N]), Watch(); '
    "  {nodedown, N, Info} -> "
    '    io:format(standard_error, "nodedown ~s ~p~n", '
    "              [N, proplists:get_value(nodedown_reason, Info)]), Watch() end end, "
    "Watch()."
)


@pytest.fixture
def erl_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ErlNode]:
    extra = ["-kernel", "net_ticktime", str(TICKTIME)]
    node = ErlNode(tmp_path_factory.mktemp("erl"), ERL_CODE, COOKIE, extra)
    try:
        yield node
    finally:
        node.close()


class LinkDriver:
    """The asyncio side of one link, for this test only: reads frames into a queue,
    ticks by the policy, and says why it ended."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.frames = FrameReader(1 << 24)
        self.policy = TickPolicy(TICKTIME, time.monotonic())
        self.inbox: asyncio.Queue[DistMessage] = asyncio.Queue()
        self.ticking = True  # False: stay silent, as a stopped node would
        self.ended: str | None = None

    def send(self, message: DistMessage) -> None:
        self.writer.write(encode(message))
        self.policy.sent()

    def feed(self, data: bytes) -> None:
        self.policy.received()
        for message in self.frames.feed(data):
            self.inbox.put_nowait(message)

    async def run(self) -> None:
        while self.ended is None:
            wait = max(0.0, self.policy.next_check - time.monotonic())
            try:
                data = await asyncio.wait_for(self.reader.read(65536), wait)
            except TimeoutError:
                data = None
            if data == b"":
                self.ended = "closed by erl"
            elif data:
                self.feed(data)
            verdict = self.policy.check(time.monotonic())
            if verdict is Verdict.DOWN:
                self.ended = "net_tick_timeout"
            elif verdict is Verdict.SEND_TICK and self.ticking:
                self.writer.write(TICK)
                self.policy.sent()
        self.writer.close()

    async def expect(self, match: Callable[[DistMessage], bool]) -> DistMessage:
        """The first message that ``match`` accepts; the others (erl's own traffic to
        rex and global_name_server) are skipped."""
        async with asyncio.timeout(WITHIN):
            while True:
                message = await self.inbox.get()
                if match(message):
                    return message


async def connect(node: ErlNode) -> LinkDriver:
    port = await lookup(LOOPBACK, "erl", epmd_port=node.epmd_port)
    assert port is not None, "erl is not registered"
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    handshake = ErlangHandshake(
        initiator=True, name=PY, creation=CREATION, cookie=COOKIE.encode(), expect=ERL
    )
    result = await asyncio.wait_for(drive(handshake, reader, writer), WITHIN)
    assert isinstance(result, Established), result
    link = LinkDriver(reader, writer)
    if result.rest:
        link.feed(result.rest)
    return link


def is_send_to_me(message: DistMessage) -> bool:
    return message.kind is Control.SEND and message.control[2] == ME


def is_reg_send_to(name: str) -> Callable[[DistMessage], bool]:
    return lambda m: m.kind is Control.REG_SEND and m.control[3] == Atom(name)


async def echo(link: LinkDriver, value: Any) -> Any:
    link.send(reg_send(ME, Atom("echo"), (ME, value)))
    return (await link.expect(is_send_to_me)).payload


def wait_log(node: ErlNode, pattern: str) -> str:
    return node.erl.wait_for_log(pattern, timeout=WITHIN + TICKTIME * 2)


def test_messages_both_ways_and_ticks_keep_the_link(erl_node: ErlNode) -> None:
    async def scenario() -> LinkDriver:
        link = await connect(erl_node)
        runner = asyncio.create_task(link.run())
        try:
            await asyncio.to_thread(wait_log, erl_node, f"^nodeup {PY}$")
            payload = {Atom("n"): [1.5, b"bin", "text", (Atom("ok"), 2**70)]}
            arrived = {Atom("n"): [1.5, b"bin", b"text", (Atom("ok"), 2**70)]}  # str: a binary
            assert await echo(link, payload) == (Atom("echoed"), arrived)

            # {py_mbox, 'py@127.0.0.1'} ! from_erl, as erl code writes it
            link.send(
                reg_send(ME, Atom("echo"), (ME, (Atom("send_to_py"), Atom("py_mbox"), [2, 40])))
            )
            got = await link.expect(is_reg_send_to("py_mbox"))
            assert got.payload == [2, 40] and isinstance(got.control[1], Pid)

            # Twice the tick time with nothing but ticks: erl keeps the link.
            await asyncio.sleep(2 * TICKTIME)
            assert link.ended is None and link.frames.ticks >= TICKTIME
            assert await echo(link, "still") == (Atom("echoed"), b"still")
            assert not erl_node.erl.logs("^nodedown")

            # Silence: erl gives the link up by its own tick rule.
            link.ticking = False
            line = await asyncio.to_thread(wait_log, erl_node, "^nodedown ")
            assert line == f"nodedown {PY} net_tick_timeout"
            async with asyncio.timeout(WITHIN):
                await runner
            return link
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    link = asyncio.run(scenario())
    assert link.ended == "closed by erl"


def test_the_python_side_gives_up_a_silent_erl(erl_node: ErlNode) -> None:
    async def scenario() -> str | None:
        link = await connect(erl_node)
        runner = asyncio.create_task(link.run())
        try:
            await asyncio.to_thread(wait_log, erl_node, f"^nodeup {PY}$")
            os.kill(erl_node.erl.proc.pid, signal.SIGSTOP)  # erl stops ticking
            try:
                async with asyncio.timeout(TICKTIME * 2 + WITHIN):
                    await runner
            finally:
                os.kill(erl_node.erl.proc.pid, signal.SIGCONT)
            return link.ended
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    assert asyncio.run(scenario()) == "net_tick_timeout"
