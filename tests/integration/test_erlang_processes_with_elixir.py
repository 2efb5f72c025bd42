"""An Elixir node (Debian's elixir) against the process layer (skycluster.erlang.processes
and its driver on one accepted ErlangLink): ``GenServer.call`` answered from Python,
a call to a missing name failing at once with ``noproc``, ``:rpc.call`` of an exposed
function and the refusal of anything else, ``Process.monitor({:jobs, node})`` told
when the mailbox closes, and ``:pg.get_members`` listing a Python mailbox."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from agents import LOOPBACK, WITHIN, Process
from erl_dist import wait_listening
from local_host import private_epmd_port

from skycluster.distribution.portmapper import register
from skycluster.erlang import Atom
from skycluster.erlang import flags as dflags
from skycluster.erlang.driver import PROCESS_FLAGS, ProcessDriver
from skycluster.erlang.erpc import Exposed
from skycluster.erlang.gencall import IncomingCall
from skycluster.erlang.link import ErlangLink, accept
from skycluster.erlang.messages import DistMessage
from skycluster.erlang.processes import Processes

pytestmark = [
    pytest.mark.erlang,
    pytest.mark.skipif(
        shutil.which("epmd") is None or shutil.which("elixir") is None,
        reason="needs Debian's elixir (and erlang-base) for an Elixir node: apt-get install elixir",
    ),
]

COOKIE = "elixir-processes-cookie"
PY = f"py@{LOOPBACK}"
CREATION = 78

SCRIPT = f"""
py = :"{PY}"
{{:ok, _}} = :pg.start_link()
true = Node.connect(py)
IO.puts(:stderr, "call #{{inspect(GenServer.call({{:jobs, py}}, 21))}}")
missing =
  try do
    GenServer.call({{:nobody, py}}, :x, 60_000)
  catch
    :exit, {{reason, _}} -> reason
  end
IO.puts(:stderr, "missing #{{inspect(missing)}}")
IO.puts(:stderr, "rpc #{{inspect(:rpc.call(py, :math, :add, [2, 40]))}}")
refused =
  case :rpc.call(py, :os, :cmd, [~c"ls"]) do
    {{:badrpc, {{:EXIT, {{:undef, _}}}}}} -> :undef
    other -> other
  end
IO.puts(:stderr, "refused #{{inspect(refused)}}")
members =
  Enum.find_value(1..200, [], fn _ ->
    case :pg.get_members(:workers) do
      [] -> Process.sleep(50); nil
      found -> found
    end
  end)
IO.puts(:stderr, "members #{{length(members)}} #{{inspect(Enum.map(members, &node/1))}}")
ref = Process.monitor({{:jobs, py}})
send({{:jobs, py}}, :close_yourself)
receive do
  {{:DOWN, ^ref, :process, obj, why}} ->
    IO.puts(:stderr, "down #{{inspect(obj)}} #{{inspect(why)}}")
after
  10_000 -> IO.puts(:stderr, "no down")
end
"""


def test_an_elixir_node_calls_rpcs_monitors_and_sees_pg_members(tmp_path: Path) -> None:
    epmd_port = private_epmd_port()
    env = dict(os.environ, HOME=str(tmp_path), ERL_EPMD_PORT=str(epmd_port))
    env.pop("SKYCLUSTER_EPMD_PORT", None)
    env["ERL_CRASH_DUMP_SECONDS"] = "0"
    epmd = Process("epmd", ["epmd", "-port", str(epmd_port), "-address", LOOPBACK], env)
    processes = [epmd]
    exposed = Exposed()
    exposed.expose("math", "add", lambda a, b: a + b)
    try:
        wait_listening(epmd, epmd_port)

        async def scenario() -> list[str]:
            links: list[ErlangLink] = []
            core = Processes(Atom(PY), CREATION, exposed=exposed)

            def deliver(name: Atom, message: Any) -> None:
                if name == Atom("jobs") and message == Atom("close_yourself"):
                    driver.mailbox_closed("jobs")

            def serve(name: Atom, call: IncomingCall, answer: Any) -> None:
                answer((Atom("doubled"), 2 * call.request))

            driver = ProcessDriver(
                core, send=lambda node, m: links[0].send(m), deliver=deliver, serve=serve
            )
            jobs = driver.mailbox_opened("jobs")
            driver.apply(list(core.scopes[Atom("pg")].join(Atom("workers"), [jobs])))

            def on_message(link: ErlangLink, message: DistMessage) -> None:
                driver.received(Atom(link.peer.name), message)

            async def serve_link(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter
            ) -> None:
                link = await accept(
                    reader,
                    writer,
                    name=PY,
                    cookie=COOKIE.encode(),
                    creation=CREATION,
                    flags=dflags.BASE | dflags.Flag.PUBLISHED | PROCESS_FLAGS,
                    on_message=on_message,
                )
                links.append(link)
                driver.node_up(Atom(link.peer.name))
                await link.run()

            server = await asyncio.start_server(serve_link, LOOPBACK, 0)
            port = server.sockets[0].getsockname()[1]
            async with server, await register("py", port, epmd_port=epmd_port):
                argv = ["elixir", "--name", f"ex@{LOOPBACK}", "--cookie", COOKIE]
                argv += ["--erl", "-start_epmd false", "-e", SCRIPT]
                elixir = Process("elixir", argv, env)
                processes.append(elixir)
                code = await asyncio.to_thread(elixir.wait_exit, WITHIN * 4)
                assert code == 0, elixir.describe()
                for link in links:
                    link.close()
            await driver.aclose()
            return list(elixir.stderr_lines)

        lines = asyncio.run(scenario())
        assert lines[:6] == [
            "call {:doubled, 42}",
            "missing :noproc",
            "rpc 42",
            "refused :undef",
            f'members 1 [:"{PY}"]',
            f'down {{:jobs, :"{PY}"}} :normal',
        ], lines
    finally:
        for process in processes:
            process.kill()
