"""Mixed clusters: skycluster's strategies link BEAM nodes when the node runs with
``erlang=True`` (the local strategy lists a real erl in a real epmd; the epmd
strategy names it; the DNS strategy finds it in a real dnsmasq's A records, the
Kubernetes strategy in a served API's endpoints, as ``app@127.0.0.2``), beside
skycluster links; and a real Elixir node connects to a Python node, lists it,
pings it and sends to its mailbox."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agents import LOOPBACK, WITHIN, Process
from dnsmasq import Dnsmasq, dnsmasq_binary
from erl_dist import ERL, NEEDS_ERL, ErlNode, wait_listening
from k8s_api_server import FakeKubernetes, Pod
from local_host import private_epmd_port

from skycluster import Cluster, NodeUp
from skycluster.erlang import Atom
from skycluster.strategy import DnsPoll, Epmd, Kubernetes, LocalEpmd

pytestmark = NEEDS_ERL

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


# A BEAM node on a host of its own, found by name: the strategies make
# ``app@<address>``. One epmd serves 127.0.0.1 and 127.0.0.2 here (epmd always
# binds 127.0.0.1 too), so the Python node needs another name than ``app``.
APP = "app@127.0.0.2"


@pytest.fixture
def erl_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ErlNode]:
    node = ErlNode(tmp_path_factory.mktemp("erl"), ERL_CODE, COOKIE, name=APP)
    try:
        yield node
    finally:
        node.close()


def links_erl_app(erl_app: ErlNode, topologies: dict[str, Any]) -> None:
    async def scenario() -> None:
        async with python_node(PY, erl_app.epmd_port, topologies=topologies) as py:
            await nodeups(py, APP)
            await asyncio.to_thread(erl_app.erl.wait_for_log, f"^nodeup {PY}$", WITHIN * 2)
            assert py.nodes() == [APP]
            assert py.stats()["erlang_links_up"] == 1

    asyncio.run(scenario())


@pytest.mark.skipif(dnsmasq_binary() is None, reason="needs Debian's dnsmasq")
def test_the_dns_strategy_links_an_erl_found_in_a_records(erl_app: ErlNode, tmp_path: Path) -> None:
    dns = Dnsmasq(tmp_path / "dnsmasq")
    dns.set_hosts([("127.0.0.2", "peers.test")])
    dns.start()
    try:
        poll = DnsPoll("peers.test", "app", dns_server=dns.server, polling_interval=0.5)
        links_erl_app(erl_app, {"dns": poll})
    finally:
        dns.stop()


def test_the_kubernetes_strategy_links_an_erl_pod(erl_app: ErlNode, tmp_path: Path) -> None:
    api = FakeKubernetes(tmp_path / "k8s")
    api.set_pods(Pod("app-0", "127.0.0.2"))
    try:
        kubernetes = Kubernetes(
            selector="app=demo",
            node_basename="app",
            master=api.url,
            service_account_path=str(api.account),
            polling_interval=0.5,
            environ={},
        )
        links_erl_app(erl_app, {"kubernetes": kubernetes})
    finally:
        api.close()


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
