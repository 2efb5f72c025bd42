"""Mixed clusters: skycluster's strategies link BEAM nodes when the node runs with
``erlang=True`` (the local strategy lists a real erl in a real epmd; the epmd
strategy names it), beside skycluster links; and a real Elixir node connects to a
Python node, lists it, pings it and sends to its mailbox."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agents import LOOPBACK, WITHIN, Process
from erl_dist import ERL, ErlNode, wait_listening
from local_host import private_epmd_port

from skycluster import Cluster, NodeUp
from skycluster.erlang import Atom
from skycluster.strategy import Epmd, LocalEpmd

pytestmark = [
    pytest.mark.erlang,
    pytest.mark.skipif(
        shutil.which("epmd") is None or shutil.which("erl") is None,
        reason="needs Debian's erlang-base for the real epmd and erl: apt-get install erlang-base",
    ),
]

COOKIE = "mixed-cookie"
PY = f"py@{LOOPBACK}"
PY2 = f"py2@{LOOPBACK}"

ERL_CODE = (
    "net_kernel:monitor_nodes(true), "
    'io:format(standard_error, "ready~n", []), '
    "Watch = fun Watch() -> receive "
    '  {nodeup, N} -> io:format(standard_error, "nodeup ~s~n", [N]), Watch(); '
    '  {nodedown, N} -> io:format(standard_error, "nodedown ~s~n", [N]), Watch() '
    "end end, Watch()."
)


@pytest.fixture
def erl_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ErlNode]:
    node = ErlNode(tmp_path_factory.mktemp("erl"), ERL_CODE, COOKIE)
    try:
        yield node
    finally:
        node.close()


def python_node(name: str, epmd_port: int, **options: Any) -> Cluster:
    return Cluster(
        name, cookie=COOKIE, erlang=True, epmd_port=epmd_port, environ={"HOME": "/x"}, **options
    )


async def nodeups(cluster: Cluster, *nodes: str) -> None:
    subscription = cluster.subscribe(initial=True)
    seen: set[str] = set()
    async with asyncio.timeout(WITHIN * 2):
        while not set(nodes) <= seen:
            event = await subscription.get()
            if isinstance(event, NodeUp):
                seen.add(event.node)


def test_the_local_strategy_links_erl_and_skycluster_nodes(erl_node: ErlNode) -> None:
    async def scenario() -> None:
        port = erl_node.epmd_port
        local = {"local": LocalEpmd(polling_interval=0.5)}
        async with (
            python_node(PY, port, topologies=local) as py,
            python_node(PY2, port, topologies={"local": LocalEpmd(polling_interval=0.5)}) as py2,
        ):
            await nodeups(py, ERL, PY2)
            await nodeups(py2, ERL, PY)
            for line in (f"^nodeup {PY}$", f"^nodeup {PY2}$"):
                await asyncio.to_thread(erl_node.erl.wait_for_log, line, WITHIN * 2)
            assert sorted(py.nodes()) == sorted([ERL, PY2])
            assert py.stats()["erlang_links_up"] == 1  # one Erlang link, one skycluster link

    asyncio.run(scenario())


def test_the_epmd_strategy_links_a_named_erl(erl_node: ErlNode) -> None:
    async def scenario() -> None:
        hosts = {"erl": Epmd(hosts=[ERL], retry_interval=0.5)}
        async with python_node(PY, erl_node.epmd_port, topologies=hosts) as py:
            await nodeups(py, ERL)
            await asyncio.to_thread(erl_node.erl.wait_for_log, f"^nodeup {PY}$", WITHIN * 2)

    asyncio.run(scenario())


ELIXIR_SCRIPT = f"""
py = :"{PY}"
Process.register(self(), :shell)
IO.puts(:stderr, "connect #{{Node.connect(py)}} #{{inspect(Node.list())}}")
IO.puts(:stderr, "ping #{{Node.ping(py)}}")
send({{:jobs, py}}, {{:hello, "from elixir", 42}})
receive do
  msg -> IO.puts(:stderr, "got #{{inspect(msg)}}")
after
  {int(WITHIN * 1000)} -> IO.puts(:stderr, "got nothing")
end
"""


@pytest.mark.skipif(shutil.which("elixir") is None, reason="needs Debian's elixir")
def test_an_elixir_node_connects_and_sends_to_a_python_node(tmp_path: Path) -> None:
    epmd_port = private_epmd_port()
    env = dict(os.environ, HOME=str(tmp_path), ERL_EPMD_PORT=str(epmd_port))
    env.pop("SKYCLUSTER_EPMD_PORT", None)
    env["ERL_CRASH_DUMP_SECONDS"] = "0"
    epmd = Process("epmd", ["epmd", "-port", str(epmd_port), "-address", LOOPBACK], env)
    processes = [epmd]
    try:
        wait_listening(epmd, epmd_port)

        async def scenario() -> tuple[Process, Any]:
            async with python_node(PY, epmd_port) as py:
                jobs = py.register("jobs")
                argv = ["elixir", "--name", f"ex@{LOOPBACK}", "--cookie", COOKIE]
                argv += ["--erl", "-start_epmd false", "-e", ELIXIR_SCRIPT]
                elixir = Process("elixir", argv, env)
                processes.append(elixir)
                async with asyncio.timeout(WITHIN * 3):
                    message = await jobs.get()
                await nodeups(py, f"ex@{LOOPBACK}")
                await py.send(f"ex@{LOOPBACK}", "shell", (Atom("reply"), "from python"))
                assert await asyncio.to_thread(elixir.wait_exit, WITHIN * 3) == 0
            return elixir, message

        elixir, message = asyncio.run(scenario())
        lines = elixir.stderr_lines
        assert lines[:3] == [
            f'connect true [:"{PY}"]',
            "ping pong",
            'got {:reply, "from python"}',
        ], elixir.describe()
        assert message == (Atom("hello"), b"from elixir", 42)
    finally:
        for process in processes:
            process.kill()
