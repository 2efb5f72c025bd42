"""skycluster agents and Erlang side by side on one port mapper (Debian's erlang-base).

(a) agents register with Erlang's real ``epmd`` and find each other through it, and take
over when it dies; (b) an ``erl`` node registers with the port mapper embedded in an agent,
and ``skycluster names`` lists it. Everything on loopback, on a port mapper port of the
test's own; every process is killed by a fixture finalizer.
"""

from __future__ import annotations

import json
import time

from agents import LOOPBACK, WITHIN, Process
from erl_dist import NEEDS_ERL
from local_host import Host, listener_pid, wait_mesh

pytestmark = NEEDS_ERL


def wait_until_listening(process: Process, port: int) -> None:
    """epmd prints nothing when it is ready: watch the socket table instead."""
    deadline = time.monotonic() + WITHIN
    while listener_pid(port) != process.proc.pid:
        assert process.running, f"{process.label} exited\n{process.describe()}"
        assert time.monotonic() < deadline, f"{process.label} not listening on {port}"
        time.sleep(0.05)


def epmd_names(host: Host) -> str:
    """``epmd -port P -names``, Erlang's own client."""
    result = host.helper("epmd -names", ["epmd", "-port", str(host.epmd_port), "-names"])
    assert result.wait_exit() == 0, result.describe()
    return result.output()


def start_erl(host: Host, name: str) -> Process:
    """``erl -sname NAME -noshell`` using the test's port mapper (never starting its own)."""
    return host.helper(
        f"erl {name}",
        ["erl", "-sname", name, "-noshell", "-start_epmd", "false", "-setcookie", "erlcookie"],
        ERL_EPMD_PORT=str(host.epmd_port),
        SKYCLUSTER_EPMD_PORT=None,
        ERL_CRASH_DUMP_SECONDS="0",
    )


def test_agents_register_with_the_real_epmd_and_link_through_it(host: Host) -> None:
    epmd = host.helper("epmd", ["epmd", "-port", str(host.epmd_port), "-address", LOOPBACK])
    wait_until_listening(epmd, host.epmd_port)

    a, b = host.agent("a"), host.agent("b")
    listing = epmd_names(host)
    assert f"up and running on port {host.epmd_port}" in listing, listing
    assert f"name a at port {a.port}" in listing, listing
    assert f"name b at port {b.port}" in listing, listing
    assert listener_pid(host.epmd_port) == epmd.proc.pid, "an agent serves one although epmd runs"
    # The local strategy reads epmd's NAMES reply and links the two.
    wait_mesh([a, b])

    # epmd dies: the agents register again, one of them serving the port mapper.
    epmd.kill()
    host.wait_listed({"a": a.port, "b": b.port})
    assert listener_pid(host.epmd_port) in (a.proc.pid, b.proc.pid)
    listing = epmd_names(host)  # Erlang's client reads our NAMES reply
    assert f"name a at port {a.port}" in listing and f"name b at port {b.port}" in listing
    assert not any(e["event"] == "nodedown" for e in a.events + b.events)


def test_an_erl_node_registers_with_the_port_mapper_of_an_agent(host: Host) -> None:
    # Nobody answers: a serves the port mapper. A short connect timeout, so that its
    # attempt to link to the Erlang node (which never completes our handshake) ends soon.
    a = host.agent("a", "--connect-timeout", "1")
    assert listener_pid(host.epmd_port) == a.proc.pid

    erl = start_erl(host, "x")
    deadline = time.monotonic() + WITHIN
    while "x" not in (listing := host.listed() or {}):
        assert erl.running, erl.describe()
        assert time.monotonic() < deadline, f"erl did not register: {listing}"
        time.sleep(0.1)
    result = host.names("--json")
    assert result.returncode == 0, result.stderr
    entries = {e["name"]: e["port"] for e in json.loads(result.stdout)}
    assert set(entries) == {"a", "x"}
    assert entries["a"] == a.port
    assert entries["x"] != a.port and entries["x"] > 0

    # The local strategy finds x too and tries it; x is not a skycluster node, so no
    # link is made, and neither side falls over.
    a.wait_for_log(r"cannot link to x@127\.0\.0\.1")
    assert a.running and erl.running
    assert a.membership_events() == []

    # The registration ends with the erl node.
    erl.kill()
    host.wait_listed({"a": a.port})
