"""The Erlang process layer on a real skycluster node (``Cluster(erlang=True)``) with a
real ``erl`` (OTP 25): a mailbox's pid that erl sends to and monitors,
``gen_server:call`` from erl answered by a mailbox's ``Request.reply`` and by a
``serve()`` handler, ``cluster.call`` to Erlang processes (and to a missing name),
``rpc:call`` of what ``cluster.expose`` allowed and nothing else, and pg both ways."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from agents import LOOPBACK, WITHIN
from erl_dist import ERL, NEEDS_ERL, ErlNode, python_node

from skycluster import Cluster
from skycluster.erlang import Atom, Pid
from skycluster.errors import CallTimeout, NoSuchMailbox
from skycluster.messaging.inbox import Mailbox, Request

pytestmark = NEEDS_ERL

COOKIE = "node-processes-cookie"
PY = f"py@{LOOPBACK}"

# ctl runs what the test asks and reports to the asking pid: {apply, Tag, M, F, A}
# (the result or the exception caught), {watch, Tag, Target} (erlang:monitor, then
# its DOWN), {member, Group} (a process that joins a pg group and stays).
ERL_CODE = (
    "register(ctl, spawn(fun Ctl() -> receive "
    "  {From, {apply, Tag, M, F, A}} -> "
    "    spawn(fun() -> From ! {Tag, catch apply(M, F, A)} end), Ctl(); "
    "  {From, {watch, Tag, Target}} -> spawn(fun() -> "
    "    Ref = erlang:monitor(process, Target), From ! {Tag, monitoring}, "
    "    receive {'DOWN', Ref, process, Obj, Why} -> From ! {Tag, down, Obj, Why} end "
    "  end), Ctl(); "
    "  {From, {member, Group}} -> spawn(fun() -> "
    "    ok = pg:join(Group, self()), From ! {member, Group, self()}, "
    "    receive stop -> ok end end), Ctl() "
    "end end)), "
    "register(echo_server, spawn(fun Srv() -> receive "
    "  {'$gen_call', From, Req} -> gen_server:reply(From, {echoed, Req}), Srv() end end)), "
    "register(sink, spawn(fun Sink() -> receive _ -> Sink() end end)), "
    "{ok, _} = pg:start(phx), "
    'io:format(standard_error, "ready~n", []), '
    "receive after infinity -> ok end."
)


@pytest.fixture
def erl_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ErlNode]:
    node = ErlNode(
        tmp_path_factory.mktemp("erl"), ERL_CODE, COOKIE, ["-kernel", "start_pg", "true"]
    )
    try:
        yield node
    finally:
        node.close()


class Erl:
    """Asks erl's ctl to do things; its answers come to the mailbox ``test``."""

    def __init__(self, py: Cluster, box: Mailbox, me: Pid) -> None:
        self.py, self.box, self.me, self.tags = py, box, me, 0

    async def ask(self, command: tuple[Any, ...]) -> None:
        await self.py.send(ERL, "ctl", (self.me, command))

    async def next(self) -> Any:
        async with asyncio.timeout(WITHIN):
            return await self.box.get()

    async def apply(self, module: str, function: str, args: list[Any]) -> Any:
        self.tags += 1
        tag = self.tags
        await self.ask((Atom("apply"), tag, Atom(module), Atom(function), args))
        while True:
            got = await self.next()
            if got[0] == tag:
                return got[1]


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(WITHIN):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


def test_pids_monitors_and_gen_server_calls_both_ways(erl_node: ErlNode) -> None:
    async def scenario() -> None:
        async with python_node(erl_node.epmd_port, PY, COOKIE) as py:
            assert await py.connect(ERL)
            test = py.register("test")
            erl = Erl(py, test, await py.erlang_pid("test"))
            jobs = py.register("jobs")
            jobs_pid = await py.erlang_pid("jobs")
            assert jobs_pid.node == Atom(PY)

            # a message to the mailbox's pid
            assert await erl.apply("erlang", "send", [jobs_pid, Atom("hi")]) == Atom("hi")
            async with asyncio.timeout(WITHIN):
                assert await jobs.get() == Atom("hi")

            # gen_server:call from erl, answered by Request.reply and by serve()
            async def answer_one() -> None:
                async with asyncio.timeout(WITHIN):
                    request = await jobs.get()
                assert isinstance(request, Request) and request.node == ERL
                request.reply((Atom("ok"), request.message + 1))

            answering = asyncio.create_task(answer_one())
            called = await erl.apply("gen_server", "call", [(Atom("jobs"), Atom(PY)), 41])
            await answering
            assert called == (Atom("ok"), 42)
            stop = py.serve("doubler", lambda n: 2 * n)
            called = await erl.apply("gen_server", "call", [(Atom("doubler"), Atom(PY)), 21])
            assert called == 42
            # a handler that raises: the Erlang caller exits with the error at once
            failed = await erl.apply(
                "gen_server", "call", [(Atom("doubler"), Atom(PY)), Atom("two"), 60_000]
            )
            assert failed[0] == Atom("EXIT") and failed[1][0][:2] == (Atom("python"), b"TypeError")
            assert py.stats()["handler_errors"] == 1
            stop()
            missing = await erl.apply("gen_server", "call", [(Atom("doubler"), Atom(PY)), 1])
            assert missing[0] == Atom("EXIT") and missing[1][0] == Atom("noproc")

            # monitors on the mailbox, by name and by pid
            await erl.ask((Atom("watch"), Atom("by_name"), (Atom("jobs"), Atom(PY))))
            await erl.ask((Atom("watch"), Atom("by_pid"), jobs_pid))
            assert {await erl.next(), await erl.next()} == {
                (Atom("by_name"), Atom("monitoring")),
                (Atom("by_pid"), Atom("monitoring")),
            }
            jobs.close()
            assert {await erl.next(), await erl.next()} == {
                (Atom("by_name"), Atom("down"), (Atom("jobs"), Atom(PY)), Atom("normal")),
                (Atom("by_pid"), Atom("down"), jobs_pid, Atom("normal")),
            }

            # cluster.call to Erlang processes
            assert await py.call(ERL, "echo_server", [1, 2]) == (Atom("echoed"), [1, 2])
            is_auth = (Atom("is_auth"), Atom(PY))
            assert await py.call(ERL, "net_kernel", is_auth) == Atom("yes")
            with pytest.raises(NoSuchMailbox):
                await py.call(ERL, "nobody", 1, timeout=60)
            with pytest.raises(CallTimeout):
                await py.call(ERL, "sink", 1, timeout=0.5)
            blocking = await asyncio.to_thread(py.call_blocking, ERL, "echo_server", 3)
            assert blocking == (Atom("echoed"), 3)

    asyncio.run(scenario())


def test_rpc_call_and_pg_on_a_node(erl_node: ErlNode) -> None:
    async def scenario() -> None:
        async with python_node(erl_node.epmd_port, PY, COOKIE) as py:
            py.expose("math", "add", lambda a, b: a + b)
            assert await py.connect(ERL)
            test = py.register("test")
            erl = Erl(py, test, await py.erlang_pid("test"))
            node = Atom(PY)
            assert await erl.apply("rpc", "call", [node, Atom("math"), Atom("add"), [2, 40]]) == 42
            refused = await erl.apply("rpc", "call", [node, Atom("os"), Atom("cmd"), [[108, 115]]])
            assert refused[0] == Atom("badrpc") and refused[1][1][0] == Atom("undef")
            py.withdraw("math", "add")
            gone = await erl.apply("rpc", "call", [node, Atom("math"), Atom("add"), [2, 40]])
            assert gone[1][1][0] == Atom("undef")

            workers = Atom("workers")
            member = py.register("member")
            member_pid = await py.erlang_pid("member")
            await py.pg_join(workers, "member")

            async def erl_sees() -> bool:
                return member_pid in await erl.apply("pg", "get_members", [workers])

            await until(erl_sees)
            await erl.ask((Atom("member"), workers))
            _, _, erl_member = await erl.next()

            async def python_sees() -> bool:
                return erl_member in await py.pg_members(workers)

            await until(python_sees)
            member.close()

            async def left() -> bool:
                return member_pid not in await erl.apply("pg", "get_members", [workers])

            await until(left)
            assert await py.pg_members(workers) == [erl_member]

            # another scope, started on the Python side after the link was up
            py.register("other")
            other_pid = await py.erlang_pid("other")
            await py.pg_join(Atom("room"), "other", scope="phx")

            async def erl_sees_in_phx() -> bool:
                found = await erl.apply("pg", "get_members", [Atom("phx"), Atom("room")])
                return other_pid in found

            await until(erl_sees_in_phx)
            assert await erl.apply("pg", "get_members", [Atom("room")]) == []  # scopes apart
            await py.pg_leave(Atom("room"), "other", scope="phx")

            async def erl_sees_it_leave() -> bool:
                found = await erl.apply("pg", "get_members", [Atom("phx"), Atom("room")])
                return found == []

            await until(erl_sees_it_leave)

            # Python answers an Erlang pid it was given
            py.send_to_pid(erl_member, Atom("stop"))  # ctl's member process ends on stop

            async def member_gone() -> bool:
                return erl_member not in await py.pg_members(workers)

            await until(member_gone)

    asyncio.run(scenario())
