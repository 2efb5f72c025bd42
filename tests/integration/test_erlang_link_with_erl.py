"""skycluster.erlang.link with a real ``erl`` (OTP 25): messages both ways
(``{echo, 'erl@...'} ! Msg``, ``{py_mbox, 'py@...'} ! Msg``, a reply to a pid), ticks
at a short ``net_ticktime`` that keep the link up, both sides' verdicts when the
other goes silent, ``net_adm:ping`` answered, and erl dialling the acceptor."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from agents import LOOPBACK, WITHIN
from erl_dist import ERL, NEEDS_ERL, ErlNode

from skycluster.distribution.portmapper import lookup, register
from skycluster.erlang import Atom, Pid
from skycluster.erlang import flags as dflags
from skycluster.erlang.cookie import load_erlang_cookie
from skycluster.erlang.link import ErlangLink, accept, dial
from skycluster.erlang.messages import Control, DistMessage, reg_send

pytestmark = NEEDS_ERL

COOKIE = "link-cookie"
PY = f"py@{LOOPBACK}"
CREATION = 4321
ME = Pid(Atom(PY), 1, 0, CREATION)  # erl drops messages to a pid of another creation
TICKTIME = 4  # erl ticks every second and gives a silent peer up after about 4 s

ERL_CODE = (
    "net_kernel:monitor_nodes(true, [nodedown_reason]), "
    "register(echo, spawn(fun Echo() -> receive "
    "  {From, {send_to_py, Name, Msg}} -> {Name, node(From)} ! Msg, Echo(); "
    "  {From, which_nodes} -> From ! {nodes(), nodes(hidden)}, Echo(); "
    "  {_, {ping, Node}} -> spawn(fun() -> "
    '    io:format(standard_error, "ping ~p~n", [net_adm:ping(Node)]) end), Echo(); '
    "  {_, {ping_later, Node}} -> spawn(fun() -> "
    "    receive after 1500 -> ok end, "
    '    io:format(standard_error, "ping_later ~p~n", [net_adm:ping(Node)]) end), Echo(); '
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


class Inbox:
    """The messages a link hands over, for a test to wait on."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[DistMessage] = asyncio.Queue()

    def __call__(self, link: ErlangLink, message: DistMessage) -> None:
        self.queue.put_nowait(message)

    async def expect(self, match: Callable[[DistMessage], bool]) -> DistMessage:
        async with asyncio.timeout(WITHIN):
            while True:
                message = await self.queue.get()
                if match(message):
                    return message


async def connect(node: ErlNode, inbox: Inbox, *, hidden: bool = False) -> ErlangLink:
    port = await lookup(LOOPBACK, "erl", epmd_port=node.epmd_port)
    assert port is not None, "erl is not registered"
    return await dial(
        LOOPBACK,
        port,
        name=PY,
        cookie=COOKIE.encode(),
        creation=CREATION,
        expect=ERL,
        on_message=inbox,
        ticktime=TICKTIME,
        flags=dflags.BASE if hidden else dflags.BASE | dflags.Flag.PUBLISHED,
    )


def is_send_to_me(message: DistMessage) -> bool:
    return message.kind is Control.SEND and message.control[2] == ME


def is_reg_send_to(name: str) -> Callable[[DistMessage], bool]:
    return lambda m: m.kind is Control.REG_SEND and m.control[3] == Atom(name)


async def echo(link: ErlangLink, inbox: Inbox, value: Any) -> Any:
    link.send(reg_send(ME, Atom("echo"), (ME, value)))
    return (await inbox.expect(is_send_to_me)).payload


def wait_log(node: ErlNode, pattern: str) -> str:
    return node.erl.wait_for_log(pattern, timeout=WITHIN + TICKTIME * 2)


def test_messages_both_ways_and_ticks_keep_the_link(erl_node: ErlNode) -> None:
    async def scenario() -> tuple[ErlangLink, str]:
        inbox = Inbox()
        link = await connect(erl_node, inbox)
        async with asyncio.TaskGroup() as tasks:
            runner = tasks.create_task(link.run())
            await asyncio.to_thread(wait_log, erl_node, f"^nodeup {PY}$")
            payload = {Atom("n"): [1.5, b"bin", "text", (Atom("ok"), 2**70)]}
            arrived = {Atom("n"): [1.5, b"bin", b"text", (Atom("ok"), 2**70)]}  # str: a binary
            assert await echo(link, inbox, payload) == (Atom("echoed"), arrived)

            # {py_mbox, 'py@127.0.0.1'} ! [2, 40], as Erlang code writes it
            request = (Atom("send_to_py"), Atom("py_mbox"), [2, 40])
            link.send(reg_send(ME, Atom("echo"), (ME, request)))
            got = await inbox.expect(is_reg_send_to("py_mbox"))
            assert got.payload == [2, 40] and isinstance(got.control[1], Pid)

            # Twice the tick time with nothing but ticks: erl keeps the link.
            await asyncio.sleep(2 * TICKTIME)
            assert not runner.done() and link.counters.ticks_received >= TICKTIME
            assert await echo(link, inbox, "still") == (Atom("echoed"), b"still")
            assert not erl_node.erl.logs("^nodedown")
            # What erl sends on its own after connecting (rex, global_name_server).
            assert link.counters.service_messages_dropped >= 1

            # Silence: erl gives the link up by its own tick rule.
            link.ticking = False
            line = await asyncio.to_thread(wait_log, erl_node, "^nodedown ")
            assert line == f"nodedown {PY} net_tick_timeout"
            async with asyncio.timeout(WITHIN):
                reason = await runner
        return link, reason

    _, reason = asyncio.run(scenario())
    assert reason == "connection_closed"


def test_the_python_side_gives_up_a_silent_erl(erl_node: ErlNode) -> None:
    async def scenario() -> str:
        link = await connect(erl_node, Inbox())
        async with asyncio.TaskGroup() as tasks:
            runner = tasks.create_task(link.run())
            await asyncio.to_thread(wait_log, erl_node, f"^nodeup {PY}$")
            os.kill(erl_node.erl.proc.pid, signal.SIGSTOP)  # erl stops ticking
            try:
                async with asyncio.timeout(TICKTIME * 2 + WITHIN):
                    return await runner
            finally:
                os.kill(erl_node.erl.proc.pid, signal.SIGCONT)

    assert asyncio.run(scenario()) == "net_tick_timeout"


@pytest.mark.parametrize("hidden", [False, True])
def test_erl_lists_the_python_side_as_visible_or_hidden(erl_node: ErlNode, hidden: bool) -> None:
    """Without PUBLISHED the Python side is a hidden node, as ``erl -hidden`` is."""

    async def scenario() -> Any:
        inbox = Inbox()
        link = await connect(erl_node, inbox, hidden=hidden)
        async with asyncio.TaskGroup() as tasks:
            runner = tasks.create_task(link.run())
            answer = await echo(link, inbox, Atom("which_nodes"))
            link.close()
            await runner
        return answer

    listed = [Atom(PY)]
    assert asyncio.run(scenario()) == (([], listed) if hidden else (listed, []))


def test_erl_pings_the_python_side(erl_node: ErlNode) -> None:
    """net_adm:ping is a gen_server call to net_kernel: the link answers it."""

    async def scenario() -> str:
        link = await connect(erl_node, Inbox())
        async with asyncio.TaskGroup() as tasks:
            runner = tasks.create_task(link.run())
            await asyncio.to_thread(wait_log, erl_node, f"^nodeup {PY}$")
            link.send(reg_send(ME, Atom("echo"), (ME, (Atom("ping"), Atom(PY)))))
            line = await asyncio.to_thread(wait_log, erl_node, "^ping ")
            assert link.counters.pings_answered == 1
            link.close()
            assert await runner == "closed"
        return line

    assert asyncio.run(scenario()) == "ping pong"


def test_erl_dials_the_python_side_and_pings_it(erl_node: ErlNode) -> None:
    """The acceptor: registered with epmd, erl connects by name and pings."""

    async def scenario() -> tuple[str, str]:
        inbox = Inbox()
        links: asyncio.Queue[ErlangLink] = asyncio.Queue()
        reasons: list[str] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            link = await accept(
                reader,
                writer,
                name=PY,
                cookie=COOKIE.encode(),
                creation=CREATION,
                on_message=inbox,
                ticktime=TICKTIME,
            )
            links.put_nowait(link)
            reasons.append(await link.run())

        server = await asyncio.start_server(serve, LOOPBACK, 0)
        port = server.sockets[0].getsockname()[1]
        async with server, await register("py", port, epmd_port=erl_node.epmd_port):
            # erl, asked through a connection of its own that we dial and then drop
            link = await connect(erl_node, inbox)
            link.send(reg_send(ME, Atom("echo"), (ME, (Atom("ping_later"), Atom(PY)))))
            await asyncio.sleep(0.2)
            link.close()
            line = await asyncio.to_thread(wait_log, erl_node, "^ping_later ")
            accepted = await asyncio.wait_for(links.get(), WITHIN)
            assert accepted.peer.name == ERL and accepted.counters.pings_answered == 1
            accepted.close()
            server.close()
        return line, accepted.peer.name

    line, peer = asyncio.run(scenario())
    assert line == "ping_later pong" and peer == ERL


def test_the_cookie_erl_made_in_home_links(tmp_path_factory: pytest.TempPathFactory) -> None:
    """erl without -setcookie creates ~/.erlang.cookie; the Python side reads it by
    Erlang's rules and links (and erl's ping comes back pong)."""
    home = tmp_path_factory.mktemp("home")
    node = ErlNode(home, ERL_CODE, None)
    try:
        cookie = load_erlang_cookie(None, {"HOME": str(home)})

        async def scenario() -> str:
            port = await lookup(LOOPBACK, "erl", epmd_port=node.epmd_port)
            assert port is not None
            link = await dial(LOOPBACK, port, name=PY, cookie=cookie, creation=CREATION)
            async with asyncio.TaskGroup() as tasks:
                runner = tasks.create_task(link.run())
                link.send(reg_send(ME, Atom("echo"), (ME, (Atom("ping"), Atom(PY)))))
                line = await asyncio.to_thread(wait_log, node, "^ping ")
                link.close()
                await runner
            return line

        assert asyncio.run(scenario()) == "ping pong"
    finally:
        node.close()
