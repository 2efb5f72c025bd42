"""The process-level protocol (skycluster.erlang.processes and its driver) with a real
``erl`` (OTP 25) over one ErlangLink: pids of Python mailboxes that erl sends to
and monitors (by pid and by name, DOWN when the mailbox closes, noproc at once
for a missing name), gen_server:call both ways, rpc:call of exposed functions
only, and pg membership both ways."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from agents import LOOPBACK, WITHIN
from erl_dist import ERL, NEEDS_ERL, ErlNode

from skycluster.distribution.portmapper import lookup
from skycluster.erlang import Atom, Pid
from skycluster.erlang import flags as dflags
from skycluster.erlang.driver import PROCESS_FLAGS, ProcessDriver
from skycluster.erlang.erpc import Exposed
from skycluster.erlang.gencall import IncomingCall
from skycluster.erlang.link import ErlangLink, dial
from skycluster.erlang.messages import DistMessage, reg_send
from skycluster.erlang.processes import Processes
from skycluster.errors import CallTimeout, NoSuchMailbox

pytestmark = NEEDS_ERL

COOKIE = "processes-cookie"
PY = f"py@{LOOPBACK}"
CREATION = 2468

# ctl runs what the test asks, each in a process of its own, and reports to the
# asking Python pid: {apply, Tag, M, F, A} (the result, or the exception caught);
# {watch, Tag, Target} (erlang:monitor, then the DOWN it gets); {member, Group}
# (a process that joins a pg group and stays). echo_server answers gen_server
# calls by hand; sink never answers.
ERL_CODE = (
    "register(ctl, spawn(fun Ctl() -> receive "
    "  {From, {apply, Tag, M, F, A}} -> "
    "    spawn(fun() -> From ! {Tag, catch apply(M, F, A)} end), Ctl(); "
    "  {From, {watch, Tag, Target}} -> spawn(fun() -> "
    "    Ref = erlang:monitor(process, Target), From ! {Tag, monitoring}, "
    "    receive {'DOWN', Ref, process, Obj, Why} -> From ! {Tag, down, Obj, Why}, "
    '      io:format(standard_error, "down ~p ~p~n", [Tag, Why]) end '
    "  end), Ctl(); "
    "  {From, {member, Group}} -> spawn(fun() -> "
    "    ok = pg:join(Group, self()), From ! {member, Group, self()}, "
    "    receive stop -> ok end end), Ctl() "
    "end end)), "
    "register(echo_server, spawn(fun Srv() -> receive "
    "  {'$gen_call', From, Req} -> gen_server:reply(From, {echoed, Req}), Srv() end end)), "
    "register(sink, spawn(fun Sink() -> receive _ -> Sink() end end)), "
    'io:format(standard_error, "ready~n", []), '
    "receive after infinity -> ok end."
)


@pytest.fixture
def erl_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ErlNode]:
    extra = ["-kernel", "start_pg", "true"]
    node = ErlNode(tmp_path_factory.mktemp("erl"), ERL_CODE, COOKIE, extra)
    try:
        yield node
    finally:
        node.close()


@dataclass
class PySide:
    """The Python node: the cores, their driver on one link, mailboxes as queues."""

    link: ErlangLink
    driver: ProcessDriver
    boxes: dict[Atom, asyncio.Queue[Any]] = field(default_factory=dict)
    pids: dict[str, Pid] = field(default_factory=dict)
    tags: int = 0

    def open(self, name: str) -> Pid:
        self.boxes[Atom(name)] = asyncio.Queue()
        self.pids[name] = self.driver.mailbox_opened(name)
        return self.pids[name]

    def close(self, name: str) -> None:
        del self.boxes[Atom(name)]
        self.driver.mailbox_closed(name)

    async def next(self, name: str) -> Any:
        async with asyncio.timeout(WITHIN):
            return await self.boxes[Atom(name)].get()

    def ask(self, command: tuple[Any, ...]) -> None:
        self.link.send(reg_send(self.pids["test"], Atom("ctl"), (self.pids["test"], command)))

    async def apply(self, module: str, function: str, args: list[Any]) -> Any:
        self.tags += 1
        tag = self.tags
        self.ask((Atom("apply"), tag, Atom(module), Atom(function), args))
        while True:
            got = await self.next("test")
            if got[0] == tag:
                return got[1]


@asynccontextmanager
async def python_side(node: ErlNode, exposed: Exposed | None = None) -> AsyncIterator[PySide]:
    port = await lookup(LOOPBACK, "erl", epmd_port=node.epmd_port)
    assert port is not None, "erl is not registered"
    processes = Processes(Atom(PY), CREATION, exposed=exposed)
    holder: list[PySide] = []

    def deliver(name: Atom, message: Any) -> None:
        holder[0].boxes[name].put_nowait(message)

    def serve(name: Atom, call: IncomingCall, answer: Any) -> None:
        assert name == Atom("jobs")
        answer((Atom("doubled"), call.request * 2))

    def on_message(link: ErlangLink, message: DistMessage) -> None:
        driver.received(Atom(link.peer.name), message)

    link = await dial(
        LOOPBACK,
        port,
        name=PY,
        cookie=COOKIE.encode(),
        creation=CREATION,
        expect=ERL,
        on_message=on_message,
        flags=dflags.BASE | dflags.Flag.PUBLISHED | PROCESS_FLAGS,
    )
    driver = ProcessDriver(
        processes, send=lambda node, m: link.send(m), deliver=deliver, serve=serve
    )
    side = PySide(link, driver)
    holder.append(side)
    side.open("test")
    runner = asyncio.get_running_loop().create_task(link.run())
    driver.node_up(Atom(ERL))
    try:
        yield side
    finally:
        link.close()
        await runner
        await driver.aclose()


def test_erl_sends_to_and_monitors_python_mailboxes(erl_node: ErlNode) -> None:
    async def scenario() -> None:
        async with python_side(erl_node) as py:
            jobs = py.open("jobs")
            assert jobs.creation == CREATION
            assert await py.apply("erlang", "send", [jobs, Atom("hello")]) == Atom("hello")
            assert await py.next("jobs") == Atom("hello")
            assert await py.apply("net_adm", "ping", [Atom(PY)]) == Atom("pong")

            by_name = (Atom("jobs"), Atom(PY))
            py.ask((Atom("watch"), Atom("by_name"), by_name))
            py.ask((Atom("watch"), Atom("by_pid"), jobs))
            py.ask((Atom("watch"), Atom("missing"), (Atom("nobody"), Atom(PY))))
            seen = {await py.next("test") for _ in range(4)}
            assert (
                Atom("missing"),
                Atom("down"),
                (Atom("nobody"), Atom(PY)),
                Atom("noproc"),
            ) in seen
            assert (Atom("by_name"), Atom("monitoring")) in seen
            assert (Atom("by_pid"), Atom("monitoring")) in seen
            py.close("jobs")
            downs = {await py.next("test") for _ in range(2)}
            assert downs == {
                (Atom("by_name"), Atom("down"), by_name, Atom("normal")),
                (Atom("by_pid"), Atom("down"), jobs, Atom("normal")),
            }
            # The link goes: erl's monitors say noconnection.
            py.open("jobs")
            py.ask((Atom("watch"), Atom("gone"), by_name))
            assert await py.next("test") == (Atom("gone"), Atom("monitoring"))
            py.link.close()
            await asyncio.to_thread(erl_node.erl.wait_for_log, "^down gone noconnection$")

    asyncio.run(scenario())


def test_gen_server_calls_both_ways(erl_node: ErlNode) -> None:
    async def scenario() -> None:
        async with python_side(erl_node) as py:
            py.open("jobs")
            answer = await py.apply("gen_server", "call", [(Atom("jobs"), Atom(PY)), 21])
            assert answer == (Atom("doubled"), 42)
            missing = await py.apply("gen_server", "call", [(Atom("nobody"), Atom(PY)), 1, 60_000])
            assert missing[0] == Atom("EXIT") and missing[1][0] == Atom("noproc")

            driver, erl = py.driver, Atom(ERL)
            is_auth = (Atom("is_auth"), Atom(PY))
            assert await driver.call(erl, Atom("net_kernel"), is_auth) == Atom("yes")
            assert await driver.call(erl, Atom("echo_server"), [1, 2]) == (Atom("echoed"), [1, 2])
            with pytest.raises(NoSuchMailbox):
                await driver.call(erl, Atom("nobody"), 1, timeout=60)
            with pytest.raises(CallTimeout):
                await driver.call(erl, Atom("sink"), 1, timeout=0.5)
            assert len(driver.processes.calls) == 0
            # erl keeps no monitor of a call that ended (the reply demonitors)
            server = await py.apply("erlang", "whereis", [Atom("echo_server")])
            info = await py.apply("erlang", "process_info", [server, Atom("monitored_by")])
            assert info == (Atom("monitored_by"), [])

    asyncio.run(scenario())


def test_rpc_call_reaches_exposed_functions_only(erl_node: ErlNode) -> None:
    exposed = Exposed()
    exposed.expose("math", "add", lambda a, b: a + b)

    async def slow_double(x: int) -> int:
        await asyncio.sleep(0.1)
        return 2 * x

    def broken() -> None:
        raise ValueError("no good")

    exposed.expose("jobs", "double", slow_double)
    exposed.expose("jobs", "broken", broken)

    async def scenario() -> None:
        async with python_side(erl_node, exposed) as py:
            node = Atom(PY)
            assert await py.apply("rpc", "call", [node, Atom("math"), Atom("add"), [2, 40]]) == 42
            assert await py.apply("erpc", "call", [node, Atom("jobs"), Atom("double"), [21]]) == 42
            refused = await py.apply("rpc", "call", [node, Atom("os"), Atom("cmd"), [[108, 115]]])
            undef = (Atom("undef"), [(Atom("os"), Atom("cmd"), [[108, 115]], [])])
            assert refused == (Atom("badrpc"), (Atom("EXIT"), undef))
            failed = await py.apply("rpc", "call", [node, Atom("jobs"), Atom("broken"), []])
            why = (Atom("python"), b"ValueError", b"no good")
            assert failed[0] == Atom("badrpc") and failed[1][1][0] == why

    asyncio.run(scenario())


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait until ``check()`` holds (pg's membership is eventually consistent)."""
    async with asyncio.timeout(WITHIN):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


def test_pg_members_both_ways(erl_node: ErlNode) -> None:
    async def scenario() -> None:
        async with python_side(erl_node) as py:
            jobs = py.open("jobs")
            scope = py.driver.processes.scopes[Atom("pg")]
            workers = Atom("workers")

            async def erl_members() -> list[Pid]:
                members: list[Pid] = await py.apply("pg", "get_members", [workers])
                return members

            py.driver.apply(list(scope.join(workers, [jobs])))

            async def erl_sees() -> bool:
                return jobs in await erl_members()

            await until(erl_sees)
            py.ask((Atom("member"), workers))
            _, _, erl_member = await py.next("test")

            async def python_sees() -> bool:
                return erl_member in scope.get_members(workers)

            await until(python_sees)
            assert set(scope.get_members(workers)) == {jobs, erl_member}
            py.close("jobs")

            async def gone() -> bool:
                return jobs not in await erl_members()

            await until(gone)
            assert await erl_members() == [erl_member]

    asyncio.run(scenario())
