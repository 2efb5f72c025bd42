"""An Elixir node (Debian's elixir) links to a Python side driven by
skycluster.erlang.link and registered with a private epmd: ``Node.connect``,
``Node.ping``, ``send({:jobs, node}, msg)`` and ``GenServer.call({:jobs, node}, req)``
(the call answered by this test's handler of ``$gen_call``: the node's own
``serve()`` is not wired to Erlang links yet)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest
from agents import LOOPBACK, WITHIN, Process
from erl_dist import wait_listening
from local_host import private_epmd_port

from skycluster.distribution.portmapper import register
from skycluster.erlang import Atom, Pid
from skycluster.erlang.link import ErlangLink, accept
from skycluster.erlang.messages import Control, DistMessage, send

pytestmark = [
    pytest.mark.erlang,
    pytest.mark.skipif(
        shutil.which("epmd") is None or shutil.which("elixir") is None,
        reason="needs Debian's elixir (and erlang-base) for an Elixir node: apt-get install elixir",
    ),
]

COOKIE = "elixir-cookie"
PY = f"py@{LOOPBACK}"

SCRIPT = f"""
py = :"{PY}"
IO.puts(:stderr, "connect #{{Node.connect(py)}} #{{inspect(Node.list())}}")
IO.puts(:stderr, "ping #{{Node.ping(py)}}")
send({{:jobs, py}}, {{:hello, "from elixir", 42}})
IO.puts(:stderr, "call #{{inspect(GenServer.call({{:jobs, py}}, {{:double, 21}}, 5000))}}")
"""


def answer_calls(link: ErlangLink, message: DistMessage, seen: list[DistMessage]) -> None:
    """``jobs``: keeps plain messages, answers ``{double, N}`` calls with ``2 * N``."""
    seen.append(message)
    if message.kind is not Control.REG_SEND or message.control[3] != Atom("jobs"):
        return
    payload = message.payload
    if isinstance(payload, tuple) and len(payload) == 3 and payload[0] == Atom("$gen_call"):
        (caller, tag), request = payload[1], payload[2]
        assert isinstance(caller, Pid)
        link.send(send(caller, (tag, 2 * request[1])))


def test_an_elixir_node_connects_pings_sends_and_calls(tmp_path: Path) -> None:
    epmd_port = private_epmd_port()
    env = dict(os.environ, HOME=str(tmp_path), ERL_EPMD_PORT=str(epmd_port))
    env.pop("SKYCLUSTER_EPMD_PORT", None)
    env["ERL_CRASH_DUMP_SECONDS"] = "0"
    epmd = Process("epmd", ["epmd", "-port", str(epmd_port), "-address", LOOPBACK], env)
    processes = [epmd]
    try:
        wait_listening(epmd, epmd_port)
        seen: list[DistMessage] = []

        async def scenario() -> tuple[list[str], list[str]]:
            links: list[ErlangLink] = []

            async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                link = await accept(
                    reader,
                    writer,
                    name=PY,
                    cookie=COOKIE.encode(),
                    creation=77,
                    on_message=lambda link, m: answer_calls(link, m, seen),
                )
                links.append(link)
                await link.run()

            server = await asyncio.start_server(serve, LOOPBACK, 0)
            port = server.sockets[0].getsockname()[1]
            async with server, await register("py", port, epmd_port=epmd_port):
                argv = ["elixir", "--name", f"ex@{LOOPBACK}", "--cookie", COOKIE]
                argv += ["--erl", "-start_epmd false", "-e", SCRIPT]
                elixir = Process("elixir", argv, env)
                processes.append(elixir)
                code = await asyncio.to_thread(elixir.wait_exit, WITHIN * 3)
                assert code == 0, elixir.describe()
                for link in links:
                    link.close()
            return elixir.stderr_lines, [link.peer.name for link in links]

        lines, peers = asyncio.run(scenario())
        assert lines[:3] == [f'connect true [:"{PY}"]', "ping pong", "call 42"], lines
        assert peers == [f"ex@{LOOPBACK}"]
        jobs = [m.payload for m in seen if m.kind is Control.REG_SEND]
        assert (Atom("hello"), b"from elixir", 42) in jobs
    finally:
        for process in processes:
            process.kill()
