"""The port mapper as the agents use it: registration, the local and hosts strategies,
takeover when the node hosting the port mapper dies, and the names/epmd commands.

Every test has a port mapper port of its own (see ``local_host.py``), so that
``skycluster names`` lists exactly the agents of the test.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agents import LOOPBACK, WITHIN, skycluster_command
from local_host import Host, listener_pid, short, wait_mesh

# --- the local strategy -----------------------------------------------------------------------


def test_three_agents_without_ports_form_a_full_mesh_and_are_listed(host: Host) -> None:
    agents = [host.agent(name) for name in ("a", "b", "c")]
    wait_mesh(agents)

    expected = {short(a): a.port for a in agents}
    result = host.names("--json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert sorted(listing, key=lambda e: e["name"]) == [
        {"name": n, "port": p} for n, p in sorted(expected.items())
    ]

    # HOST and --epmd-port as arguments (no environment variable); text output.
    text = host.names(LOOPBACK, "--epmd-port", str(host.epmd_port), SKYCLUSTER_EPMD_PORT=None)
    assert text.returncode == 0, text.stderr
    rows = {tuple(line.split("\t")) for line in text.stdout.splitlines()}
    assert rows == {(n, str(p)) for n, p in expected.items()}

    # The first agent found nobody answering and serves the port mapper itself.
    assert listener_pid(host.epmd_port) == agents[0].proc.pid
    for agent in agents:
        assert agent.linked() == {o.identity for o in agents if o is not agent}


def test_survivors_take_over_when_the_port_mapper_host_is_killed(host: Host) -> None:
    # Resource warnings on: a lost registration must be closed, not left to the GC.
    warn = {"PYTHONWARNINGS": "always::ResourceWarning"}
    a, b, c = (host.agent(name, env=warn) for name in ("a", "b", "c"))
    wait_mesh([a, b, c])
    assert listener_pid(host.epmd_port) == a.proc.pid, "the first agent should serve it"
    marks = {b: b.mark(), c: c.mark()}

    a.kill()  # kill -9: no goodbye, no unregistration
    b.wait_nodedown(a.identity, since=marks[b])
    c.wait_nodedown(a.identity, since=marks[c])

    # b and c register again with a new port mapper, served by one of them.
    host.wait_listed({"b": b.port, "c": c.port})
    assert listener_pid(host.epmd_port) in (b.proc.pid, c.proc.pid)

    d = host.agent("d")
    wait_mesh([b, c, d])
    assert d.linked() == {b.identity, c.identity}
    host.wait_listed({"b": b.port, "c": c.port, "d": d.port})

    # b and c stayed linked through all of it.
    b.expect_none(lambda e: e.get("node") == c.identity, 0, since=marks[b], what="event about c")
    c.expect_none(lambda e: e.get("node") == b.identity, 0, since=marks[c], what="event about b")

    for survivor in (b, c):
        survivor.signal(signal.SIGTERM)
        assert survivor.wait_exit() == 0, survivor.describe()
        assert not any("ResourceWarning" in line for line in survivor.stderr_lines), (
            survivor.describe()
        )


def test_a_second_agent_with_a_registered_name_exits_1(host: Host) -> None:
    first = host.agent("a")
    clash = host.agent("a", wait=False)
    assert clash.wait_exit() == 1, clash.describe()
    assert clash.events == [], "it must fail before reporting started"
    message = "\n".join(clash.stderr_lines)
    assert "'a' is already registered" in message, message
    assert "choose another name" in message, message
    assert len(clash.stderr_lines) == 1, message  # one clear line, no traceback
    # The first keeps its registration and keeps running.
    assert first.running
    assert host.listed() == {"a": first.port}


# --- the standalone port mapper ---------------------------------------------------------------


def test_standalone_epmd_serves_the_agents_and_exits_0_on_sigterm(host: Host) -> None:
    port = host.epmd_port
    epmd = host.helper(
        "epmd",
        [*skycluster_command(), "epmd", "--bind", LOOPBACK, "--epmd-port", str(port)],
        SKYCLUSTER_EPMD_PORT=None,  # the flag alone chooses the port
    )
    deadline = time.monotonic() + WITHIN
    while not epmd.stdout_lines:
        assert epmd.running and time.monotonic() < deadline, epmd.describe()
        time.sleep(0.02)
    assert epmd.stdout_lines[0] == f"port mapper listening on {LOOPBACK}:{port}"
    assert listener_pid(port) == epmd.proc.pid

    a, b = host.agent("a"), host.agent("b")
    wait_mesh([a, b])
    assert host.listed() == {"a": a.port, "b": b.port}
    assert listener_pid(port) == epmd.proc.pid, "an agent serves one although epmd runs"

    # A second standalone one on the same port fails to start.
    clash = host.helper("epmd-2", [*skycluster_command(), "epmd"])
    assert clash.wait_exit() == 1, clash.describe()
    assert any(str(port) in line for line in clash.stderr_lines), clash.describe()

    marks = {a: a.mark(), b: b.mark()}
    epmd.signal(signal.SIGTERM)
    assert epmd.wait_exit() == 0, epmd.describe()
    # The agents notice, and one of them takes over; they stay linked.
    host.wait_listed({"a": a.port, "b": b.port})
    assert listener_pid(port) in (a.proc.pid, b.proc.pid)
    a.expect_none(lambda e: e["event"] == "nodedown", 0, since=marks[a], what="nodedown")
    b.expect_none(lambda e: e["event"] == "nodedown", 0, since=marks[b], what="nodedown")


def test_names_with_nothing_listening_exits_1_with_a_message(host: Host) -> None:
    for result in (host.names("--json"), host.names()):
        assert result.returncode == 1
        assert result.stdout == ""
        assert f"no port mapper at {LOOPBACK}:{host.epmd_port}" in result.stderr, result.stderr
        assert len(result.stderr.splitlines()) == 1, result.stderr


@pytest.fixture
def not_a_port_mapper(host: Host) -> Iterator[None]:
    """Something else holds the port mapper port: it answers every connection with an
    HTTP error and closes it."""
    listener = socket.create_server((LOOPBACK, host.epmd_port))
    listener.settimeout(0.1)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, name="not a port mapper", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(WITHIN)
        listener.close()


@pytest.mark.usefixtures("not_a_port_mapper")
def test_something_else_on_the_port_mapper_port_is_a_clear_start_error(host: Host) -> None:
    agent = host.agent("a", wait=False)
    assert agent.wait_exit() == 1, agent.describe()
    assert agent.events == []
    message = "\n".join(agent.stderr_lines)
    assert len(agent.stderr_lines) == 1, message  # one line, no traceback
    assert f"cannot register 'a' with the port mapper at {LOOPBACK}:{host.epmd_port}" in message
    assert "--no-port-mapper" in message

    names = host.names("--json")
    assert names.returncode == 1
    assert names.stdout == ""
    assert len(names.stderr.splitlines()) == 1, names.stderr
    assert f"port mapper at {LOOPBACK}:{host.epmd_port}" in names.stderr, names.stderr


def test_a_node_without_port_mapper_neither_registers_nor_serves(host: Host) -> None:
    fixed = host.factory.port()
    x = host.agent("x", "--no-port-mapper", strategy=(), port=fixed, wait=False)
    started = x.wait_started()
    assert started["address"] == f"{LOOPBACK}:{fixed}"
    # No port mapper was started by x.
    assert listener_pid(host.epmd_port) is None
    assert host.names().returncode == 1

    # With one running (served by a), x is still not registered.
    a = host.agent("a")
    assert host.listed() == {"a": a.port}
    # x is otherwise a working node, reached at its address by another such node.
    y = host.factory("y", hosts=[a, x], args=["--no-port-mapper"])
    y.wait_nodeup(a.identity)
    y.wait_nodeup(x.identity)
    assert host.listed() == {"a": a.port}


# --- the hosts-file strategy ------------------------------------------------------------------


def hosts_strategy(path: Path) -> tuple[str, ...]:
    return ("--strategy", "hosts", "--hosts-file", str(path))


def test_hosts_file_links_to_the_agents_registered_on_its_hosts(host: Host) -> None:
    # a and b only register: nothing but h's hosts file can link them to h.
    a = host.agent("a", strategy=())
    b = host.agent("b", strategy=())
    hosts = host.tmp_path / "hosts"
    hosts.write_text(f"# the hosts of the test\n\n{LOOPBACK}  # loopback\n")
    h = host.agent("h", strategy=hosts_strategy(hosts))
    h.wait_nodeup(a.identity)
    h.wait_nodeup(b.identity)
    a.wait_nodeup(h.identity)
    assert not any("WARNING" in line for line in h.stderr_lines), h.describe()


def test_malformed_lines_are_warned_about_and_the_others_are_used(host: Host) -> None:
    a = host.agent("a", strategy=())
    hosts = host.tmp_path / ".hosts.erlang"
    # A host with a port is not a host: it was accepted, then never answered (silently).
    hosts.write_text(f"% Erlang's format\n'{LOOPBACK}'.\nnot a host!\n{LOOPBACK}:4369\n")
    h = host.agent("h", strategy=hosts_strategy(hosts))
    for number, text in ((3, "not a host!"), (4, f"{LOOPBACK}:4369")):
        warning = h.wait_for_log(re.escape(f"{hosts}:{number}: "))
        assert "WARNING" in warning and repr(text) in warning, warning
    h.wait_nodeup(a.identity)
    assert h.running
    assert len([line for line in h.stderr_lines if "WARNING" in line]) == 2, h.describe()


def test_a_missing_hosts_file_is_warned_about_and_read_once_it_exists(host: Host) -> None:
    a = host.agent("a", strategy=())
    hosts = host.tmp_path / "later" / "hosts"
    h = host.agent("h", strategy=hosts_strategy(hosts))
    warning = h.wait_for_log(r"WARNING")
    assert str(hosts) in warning and "keeps running" in warning, warning
    assert h.running
    assert h.linked() == set()

    mark = h.mark()
    hosts.parent.mkdir()
    hosts.write_text(f"{LOOPBACK}\n")
    h.wait_nodeup(a.identity, since=mark)

    h.signal(signal.SIGTERM)
    assert h.wait_exit() == 0, h.describe()
    assert h.events[-1]["event"] == "stopped"
