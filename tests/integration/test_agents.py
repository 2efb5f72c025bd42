"""Real ``skycluster agent`` processes on loopback: formation, failures, restarts,
hostile peers, a blocked application loop and the command line.

Agents come from the ``agent_factory`` fixture (``conftest.py``, ``agents.py``),
which kills every process at the end of a test and checks every agent's output:
per peer, nodeup and nodedown strictly alternate.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import stat
import struct
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from agents import (
    COOKIE,
    LOOPBACK,
    WITHIN,
    Agent,
    AgentFactory,
    Event,
    clean_environ,
    free_port,
    run_cli,
)

from skycluster.distribution import frames
from skycluster.distribution.handshake import (
    PREAMBLE,
    Established,
    Handshake,
    Introduction,
    Refused,
)
from skycluster.names import NodeName

APPS = Path(__file__).parent / "apps"
FAST_HEARTBEATS = ["--heartbeat-interval", "0.2", "--heartbeat-timeout", "0.8"]
# A connection that a hostile client opened must be closed by then (agents under
# attack run with --handshake-timeout 1): a liveness bound, not a timing claim.
CLOSE_WITHIN = 8.0


def is_membership(event: Event) -> bool:
    return event["event"] in ("nodeup", "nodedown")


def nodedown_of(node: str) -> Callable[[Event], bool]:
    return lambda e: e["event"] == "nodedown" and e.get("node") == node


def nodeup_of(node: str) -> Callable[[Event], bool]:
    return lambda e: e["event"] == "nodeup" and e.get("node") == node


def formed(*agents: Agent) -> None:
    """Wait until every agent has reported every other one up."""
    for agent in agents:
        for other in agents:
            if other is not agent:
                agent.wait_nodeup(other.identity)


def started(*agents: Agent) -> None:
    for agent in agents:
        agent.wait_started()


def trio(agent_factory: AgentFactory, *args: str) -> tuple[Agent, Agent, Agent]:
    """a and b seed each other; c only knows a. Started together, then formed."""
    port_b = agent_factory.port()
    a = agent_factory("a", hosts=[f"b@{LOOPBACK}:{port_b}"], args=args)  # first: port mapper
    b = agent_factory("b", port=port_b, hosts=[a], args=args, wait=False)
    c = agent_factory("c", hosts=[a], args=args, wait=False)
    started(b, c)
    formed(a, b, c)
    return a, b, c


def pair(
    agent_factory: AgentFactory, *args: str, b_args: tuple[str, ...] = ()
) -> tuple[Agent, Agent]:
    """a and b seed each other; a started first (it serves the host's port mapper)."""
    port_b = agent_factory.port()
    a = agent_factory("a", hosts=[f"b@{LOOPBACK}:{port_b}"], args=args)
    b = agent_factory("b", port=port_b, hosts=[a], args=b_args or args)
    formed(a, b)
    return a, b


# -- formation ----------------------------------------------------------------


def test_three_agents_form_a_full_mesh_from_one_seed_each(agent_factory: AgentFactory) -> None:
    a, b, c = trio(agent_factory)
    # c was told about a only: its link to b comes from the mesh (a's PEERS).
    up = c.wait_nodeup(b.identity)
    assert up["address"] == b.address
    assert up["metadata"] == {}
    assert isinstance(up["time"], float)
    assert b.wait_nodeup(c.identity)["address"] == c.address
    for agent in (a, b, c):
        first = agent.events[0]
        assert first == {"event": "started", "node": agent.identity, "address": agent.address}
        assert agent.linked() == {x.identity for x in (a, b, c)} - {agent.identity}
        assert not [e for e in agent.events if e["event"] == "nodedown"]


# -- failures -----------------------------------------------------------------


def test_kill_9_is_seen_as_connection_closed(agent_factory: AgentFactory) -> None:
    # Default heartbeats (1 s / 3 s): a report that waited for them would say heartbeat_timeout.
    a, b, c = trio(agent_factory)
    marks = {agent.identity: agent.mark() for agent in (a, b)}
    c.signal(signal.SIGKILL)
    assert c.wait_exit() == -signal.SIGKILL
    for agent in (a, b):
        down = agent.wait_nodedown(c.identity, since=marks[agent.identity])
        assert down["reason"] == "connection_closed"
    # the survivors keep their own link
    a.expect_none(nodedown_of(b.identity), 0.5, what="nodedown of a survivor")
    b.expect_none(nodedown_of(a.identity), 0, what="nodedown of a survivor")
    assert a.linked() == {b.identity}
    assert b.linked() == {a.identity}


def test_sigstop_is_a_heartbeat_timeout_and_sigcont_rejoins(agent_factory: AgentFactory) -> None:
    a, b = pair(agent_factory, *FAST_HEARTBEATS)
    mark_a, mark_b = a.mark(), b.mark()
    b.signal(signal.SIGSTOP)
    down = a.wait_nodedown(b.identity, since=mark_a)
    assert down["reason"] == "heartbeat_timeout"
    rejoin_a = a.mark()
    b.signal(signal.SIGCONT)
    # No operator action: the Epmd strategies link the two again.
    a.wait_nodeup(b.identity, since=rejoin_a)
    b.wait_nodeup(a.identity, since=mark_b)  # alternation: b saw a go down first
    assert [e["event"] for e in b.membership_events(mark_b)][:2] == ["nodedown", "nodeup"]
    assert a.linked() == {b.identity}
    assert b.linked() == {a.identity}


@pytest.mark.parametrize("victim", ["c", "a"], ids=["leaf", "seed-and-port-mapper-host"])
def test_a_restarted_node_rejoins_on_the_same_port(
    agent_factory: AgentFactory, victim: str
) -> None:
    # a started first, so it also serves the host's port mapper; b and c were seeded with a.
    agents = dict(zip("abc", trio(agent_factory), strict=True))
    dead = agents.pop(victim)
    survivors = list(agents.values())
    marks = {agent.identity: agent.mark() for agent in survivors}
    dead.signal(signal.SIGKILL)
    dead.wait_exit()
    for agent in survivors:
        down = agent.wait_nodedown(dead.identity, since=marks[agent.identity])
        assert down["reason"] == "connection_closed"
    marks = {agent.identity: agent.mark() for agent in survivors}
    again = agent_factory(victim, port=dead.port, hosts=[survivors[0]])
    for agent in survivors:
        up = agent.wait_nodeup(dead.identity, since=marks[agent.identity])
        assert up["address"] == dead.address
        again.wait_nodeup(agent.identity)
    for agent in survivors:
        events = [e["event"] for e in agent.membership_events() if e["node"] == dead.identity]
        assert events == ["nodeup", "nodedown", "nodeup"]
        others = [e for e in agent.membership_events() if e["node"] != dead.identity]
        assert [e["event"] for e in others] == ["nodeup"], "the survivors' link flapped"


def test_a_stopped_port_mapper_host_does_not_keep_others_from_starting(
    agent_factory: AgentFactory,
) -> None:
    a, b = pair(agent_factory)  # a started first: it serves the port mapper
    a.signal(signal.SIGSTOP)
    c = agent_factory("c", hosts=[b], wait=False)
    c.wait_started(timeout=15)
    formed(b, c)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_graceful_stop_says_shutdown(agent_factory: AgentFactory, signum: int) -> None:
    a, b = pair(agent_factory)
    mark = a.mark()
    b.signal(signum)
    assert b.wait_exit() == 0
    assert b.events[-1] == {"event": "stopped", "node": b.identity}
    assert a.wait_nodedown(b.identity, since=mark)["reason"] == "shutdown"
    assert not b.stderr_lines, "a graceful stop logs no warning or error"


# -- wrong cookie -------------------------------------------------------------


def test_an_agent_with_another_cookie_never_links(agent_factory: AgentFactory) -> None:
    right, wrong = "right-cookie-5c1e0b7d", "wrong-cookie-93aa4f60"
    port_b, port_c = agent_factory.port(), agent_factory.port()
    env = {"SKYCLUSTER_COOKIE": right}
    # a dials c and c dials a: both the acceptor's and the initiator's checks are exercised.
    a = agent_factory("a", hosts=[f"b@{LOOPBACK}:{port_b}", f"c@{LOOPBACK}:{port_c}"], env=env)
    b = agent_factory("b", port=port_b, hosts=[a], env=env)
    c = agent_factory(
        "c", port=port_c, hosts=[a], env={"SKYCLUSTER_COOKIE": None}, args=["--cookie", wrong]
    )
    formed(a, b)
    failure = r"handshake with 127\.0\.0\.1:\d+ failed: .*cookie"
    a.wait_for_log(failure)  # c's dial, refused by a
    c.wait_for_log(failure)  # a's dial, refused by c
    a.wait_for_log(rf"{re.escape(c.identity)}")  # a names the node it cannot link to
    # an observation window (a, b and c watched together: b and c are checked after it)
    a.expect_none(nodeup_of(c.identity), 2.0, what="nodeup of the wrong-cookie node")
    b.expect_none(nodeup_of(c.identity), 0, what="nodeup of the wrong-cookie node")
    c.expect_none(lambda e: e["event"] == "nodeup", 0, what="nodeup with another cookie")
    for agent, other in ((a, b), (b, a)):
        assert agent.linked() == {other.identity}
        assert not [e for e in agent.events if e["event"] == "nodedown"]
    for agent in (a, b, c):
        output = agent.output()
        assert right not in output and wrong not in output, f"{agent.label} shows a cookie"


# -- hostile bytes --------------------------------------------------------------


def closed_within(sock: socket.socket, seconds: float, received: bytearray) -> bool:
    """True once the peer closed the connection (EOF or reset) within ``seconds``;
    whatever it sent before is appended to ``received``."""
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        readable, _, _ = select.select([sock], [], [], remaining)
        if not readable:
            return False
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return True
        if not chunk:
            return True
        received += chunk


def send(sock: socket.socket, data: bytes) -> bool:
    """False when the peer has already closed the connection."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


def hello(versions: list[int]) -> bytes:
    return PREAMBLE + frames.encode(
        {
            "t": "hello",
            "versions": versions,
            "name": f"intruder@{LOOPBACK}",
            "creation": 1,
            "nonce": os.urandom(32),
            "hidden": False,
            "address": None,
            "metadata": {},
        }
    )


def hostile_garbage(sock: socket.socket) -> bytes | None:
    send(sock, b"\x00\xff\x13garbage, not a skycluster peer\r\n" * 8)
    return None


def hostile_http(sock: socket.socket) -> bytes | None:
    send(sock, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: test\r\n\r\n")
    return None


def hostile_version_0(sock: socket.socket) -> bytes | None:
    send(sock, hello([0]))
    return frames.encode({"t": "reject", "reason": "version"})


def hostile_2gb_frame(sock: socket.socket) -> bytes | None:
    send(sock, PREAMBLE + struct.pack(">I", 2**31))
    return None


def hostile_silence(sock: socket.socket) -> bytes | None:
    return None


def hostile_hello_then_silence(sock: socket.socket) -> bytes | None:
    send(sock, hello([1]))  # admitted: the agent answers with its CHALLENGE, then waits
    return None


def hostile_slowloris(sock: socket.socket) -> bytes | None:
    """One byte of a valid HELLO per second (the handshake timeout is 1 s)."""
    payload = hello([1])
    for sent in range(1, 9):
        if not send(sock, payload[sent - 1 : sent]) or closed_within(sock, 1.0, bytearray()):
            break
    return None


HOSTILE: dict[str, Callable[[socket.socket], bytes | None]] = {
    "garbage": hostile_garbage,
    "http": hostile_http,
    "version-0": hostile_version_0,
    "2GB-frame": hostile_2gb_frame,
    "silent": hostile_silence,
    "hello-then-silent": hostile_hello_then_silence,
    "slowloris": hostile_slowloris,
}


@dataclass
class Probe:
    case: str
    local: str = ""  # our end of the connection, as the agent logs it
    closed: bool = False
    expected: bytes | None = None
    received: bytes = b""


def probe(port: int, case: str) -> Probe:
    result = Probe(case)
    with socket.create_connection((LOOPBACK, port), timeout=WITHIN) as sock:
        result.local = "{}:{}".format(*sock.getsockname()[:2])
        result.expected = HOSTILE[case](sock)
        received = bytearray()
        result.closed = closed_within(sock, CLOSE_WITHIN, received)
        result.received = bytes(received)
    return result


def hostile_cluster(agent_factory: AgentFactory) -> tuple[Agent, Agent]:
    return pair(agent_factory, "--handshake-timeout", "1", b_args=("--handshake-timeout", "5"))


def survives(a: Agent, b: Agent, joining: Agent) -> None:
    """The a-b link never went down and the agent that joined meanwhile is linked."""
    formed(a, b, joining)
    assert a.running and b.running
    for agent, other in ((a, b), (b, a)):
        assert not [e for e in agent.events if nodedown_of(other.identity)(e)]


def test_hostile_bytes_are_closed_and_logged(agent_factory: AgentFactory) -> None:
    """Every hostile client at once, while a new agent joins: each connection is
    closed within a bound (handshake timeout 1 s) and logged with its address."""
    a, b = hostile_cluster(agent_factory)
    joining = agent_factory("c", hosts=[a], wait=False)
    with ThreadPoolExecutor(len(HOSTILE)) as pool:
        probes = list(pool.map(lambda case: probe(a.port, case), HOSTILE))
    problems = [f"{p.case}: still open after {CLOSE_WITHIN} s" for p in probes if not p.closed]
    problems += [
        f"{p.case}: answered {p.received!r}, expected {p.expected!r}"
        for p in probes
        if p.expected is not None and p.received != p.expected
    ]
    assert not problems, "\n".join(problems)
    for p in probes:
        try:
            a.wait_for_log(rf"{re.escape(p.local)}\b")
        except AssertionError as exc:
            raise AssertionError(f"{p.case}: no log line names {p.local}\n{exc}") from None
    survives(a, b, joining)


def handshake(sock: socket.socket, name: str, creation: int = 7) -> str | None:
    """A raw client that knows the cookie introduces itself as ``name`` (incarnation
    ``creation``); None once linked, else the reason the agent refused."""
    me = Introduction(NodeName.parse(name), creation=creation)
    hs = Handshake(initiator=True, me=me, cookie=COOKIE.encode())
    sock.sendall(hs.initiate())
    while True:
        data = sock.recv(65536)
        assert data, "the agent closed the connection during the handshake"
        events = hs.receive(data)
        out = hs.outgoing()
        if out:
            sock.sendall(out)
        for event in events:
            if isinstance(event, Refused):
                return event.reason
            if isinstance(event, Established):
                return None


def authenticate(sock: socket.socket, name: str, creation: int = 7) -> None:
    refused = handshake(sock, name, creation)
    assert refused is None, f"the agent refused the link: {refused}"


BAD_FRAMES = {
    "2GB-frame": struct.pack(">I", 2**31),
    "undecodable": frames.encode_payload(b"\xc1"),
    "not-an-array": frames.encode({"not": "a list"}),
}


def test_bad_frames_after_the_handshake_close_only_that_link(agent_factory: AgentFactory) -> None:
    """A peer that knows the cookie, then sends a bad link frame: only its link goes."""
    a, b = hostile_cluster(agent_factory)
    for case, frame in BAD_FRAMES.items():
        intruder = f"intruder-{case}@{LOOPBACK}"
        with socket.create_connection((LOOPBACK, a.port), timeout=WITHIN) as sock:
            authenticate(sock, intruder)
            a.wait_nodeup(intruder)
            mark = a.mark()
            send(sock, frame)
            assert closed_within(sock, CLOSE_WITHIN, bytearray()), f"{case}: left open"
        assert a.wait_nodedown(intruder, since=mark)["reason"] == "connection_closed"
        a.wait_for_log(rf"closing link to {re.escape(intruder)}")
    survives(a, b, agent_factory("c", hosts=[a], wait=False))


FLOOD = 200  # more idle connections than an agent accepts at once (max_handshakes, 128)


def flood(agent: Agent) -> list[socket.socket]:
    """Connections that never say a word; returns once the agent refuses more."""
    sockets = [socket.create_connection((LOOPBACK, agent.port), timeout=WITHIN)]
    sockets += [socket.create_connection((LOOPBACK, agent.port)) for _ in range(FLOOD - 1)]
    agent.wait_for_log(r"refusing connection from 127\.0\.0\.1:\d+: too many handshakes")
    return sockets


def test_a_handshake_flood_neither_breaks_links_nor_locks_out_joiners(
    agent_factory: AgentFactory,
) -> None:
    a, b = hostile_cluster(agent_factory)  # a: handshake timeout 1 s
    sockets = flood(a)
    try:
        joining = agent_factory("c", hosts=[a])  # refused while the flood lasts, then retried
        a.wait_for_log(r"no handshake within")  # the idle connections are cut off
        survives(a, b, joining)
    finally:
        for sock in sockets:
            sock.close()


def test_a_failed_mesh_link_is_retried(agent_factory: AgentFactory) -> None:
    a, b = pair(agent_factory, b_args=("--handshake-timeout", "30"))
    # A new link gets the list its peer told at its last mesh pass (once a second):
    # after one, a gives c a list with b in it at once, so that c dials b before a's
    # next pass tells b about c (then b would dial c, and c never fail).
    time.sleep(1.2)
    sockets = flood(b)  # b refuses every new connection for now
    try:
        c = agent_factory("c", hosts=[a])  # knows a only; learns b from a
        c.wait_nodeup(a.identity)
        c.wait_for_log(rf"cannot link to {re.escape(b.identity)}")
    finally:
        for sock in sockets:
            sock.close()  # b accepts connections again; a-b and a-c never went down
    c.wait_nodeup(b.identity, timeout=5)
    b.wait_nodeup(c.identity)


def test_a_new_incarnation_replaces_the_old_link_in_order(agent_factory: AgentFactory) -> None:
    """A node that comes back before its old link is noticed dead: the agent reports
    the old incarnation down, then the new one up; a duplicate is refused."""
    a = agent_factory("a")
    ghost = f"ghost@{LOOPBACK}"
    with (
        socket.create_connection((LOOPBACK, a.port), timeout=WITHIN) as old,
        socket.create_connection((LOOPBACK, a.port), timeout=WITHIN) as new,
        socket.create_connection((LOOPBACK, a.port), timeout=WITHIN) as duplicate,
    ):
        authenticate(old, ghost, creation=1)
        a.wait_nodeup(ghost)
        mark = a.mark()
        authenticate(new, ghost, creation=2)
        assert a.wait_nodeup(ghost, since=mark)
        assert [e["event"] for e in a.membership_events(mark)] == ["nodedown", "nodeup"]
        assert a.membership_events(mark)[0]["reason"] == "connection_closed"
        assert closed_within(old, CLOSE_WITHIN, bytearray()), "the old link was left open"
        mark = a.mark()
        assert handshake(duplicate, ghost, creation=2) == "alive"
        a.expect_none(is_membership, 0.3, since=mark, what="event for a refused duplicate")
        assert not closed_within(new, 0.1, bytearray()), "the duplicate cost the live link"


# -- a blocked application loop -----------------------------------------------


@pytest.mark.parametrize("mode", ["sleep", "cpu"])
def test_a_blocked_application_loop_keeps_its_node_linked(
    agent_factory: AgentFactory, mode: str
) -> None:
    hub = agent_factory("hub")  # default heartbeats: interval 1 s, timeout 3 s
    name = f"app@{LOOPBACK}:{agent_factory.port()}"
    app = agent_factory.spawn(
        "app", [sys.executable, str(APPS / "blocking_app.py"), mode, name, hub.spec, "10"]
    )
    linked = app.wait_for(lambda e: e["event"] == "linked", what="linked line")
    assert linked["nodes"] == [hub.identity]
    hub.wait_nodeup(f"app@{LOOPBACK}")
    mark = hub.mark()
    done = app.wait_for(lambda e: e["event"] == "done", 30, what="done line")
    assert done["blocked"] >= 9.5, "the application did not block its loop"
    # The application leaves right after "done": its goodbye may already be there.
    meanwhile = [e for e in hub.membership_events(mark) if e.get("reason") != "shutdown"]
    assert meanwhile == [], "the hub saw the blocked application flap"
    assert done["seen"] == [], "the application saw membership change while blocked"
    assert done["nodes"] == [hub.identity]
    assert app.wait_exit() == 0
    assert hub.wait_nodedown(f"app@{LOOPBACK}", since=mark)["reason"] == "shutdown"


# -- the command line ---------------------------------------------------------


AGENT_FLAGS = [
    "--name",
    "--cookie",
    "--listen",
    "--heartbeat-interval",
    "--heartbeat-timeout",
    "--handshake-timeout",
    "--connect-timeout",
    "--full-mesh",
    "--no-full-mesh",
    "--hidden",
    "--tls-cert",
    "--tls-key",
    "--tls-ca",
    "--strategy",
    "--hosts",
    "--retry-interval",
    "--json",
    "--log-level",
]


def test_help(tmp_path: Path) -> None:
    env = clean_environ(tmp_path)
    top = run_cli(["--help"], env)
    assert top.returncode == 0, top.stderr
    assert "agent" in top.stdout
    agent = run_cli(["agent", "--help"], env)
    assert agent.returncode == 0, agent.stderr
    missing = [flag for flag in AGENT_FLAGS if not re.search(rf"{flag}\b", agent.stdout)]
    assert not missing, f"agent --help does not mention {missing}"
    assert "SKYCLUSTER_HEARTBEAT_TIMEOUT" in agent.stdout
    version = run_cli(["--version"], env)
    assert version.returncode == 0 and version.stdout.startswith("skycluster ")


NAME = f"a@{LOOPBACK}:{free_port()}"
USAGE_ERRORS: list[tuple[str, list[str], dict[str, str], str]] = [
    ("unknown-flag", ["agent", "--name", NAME, "--bogus"], {}, "--bogus"),
    ("bad-seconds", ["agent", "--name", NAME, "--heartbeat-timeout", "x"], {},
     "--heartbeat-timeout"),
    ("bad-name", ["agent", "--name", "no-at-sign"], {}, "--name"),
    ("bad-port-in-name", ["agent", "--name", f"a@{LOOPBACK}:99999"], {}, "--name"),
    ("bad-strategy", ["agent", "--name", NAME, "--strategy", "nope"], {}, "--strategy"),
    ("no-hosts", ["agent", "--name", NAME, "--strategy", "epmd"], {}, "--hosts"),
    ("bad-retry", ["agent", "--name", NAME, "--strategy", "epmd", "--hosts", NAME,
                   "--retry-interval", "0"], {}, "--retry-interval"),
    ("bad-log-level", ["agent", "--name", NAME, "--log-level", "loud"], {}, "--log-level"),
    ("timeout-below-interval", ["agent", "--name", NAME, "--heartbeat-interval", "2",
                                "--heartbeat-timeout", "1"], {}, "heartbeat_timeout"),
    ("no-command", [], {}, "COMMAND"),
    ("env-seconds", ["agent", "--name", NAME], {"SKYCLUSTER_HEARTBEAT_TIMEOUT": "abc"},
     "SKYCLUSTER_HEARTBEAT_TIMEOUT"),
    ("env-strategy", ["agent", "--name", NAME], {"SKYCLUSTER_STRATEGY": "nope"},
     "SKYCLUSTER_STRATEGY"),
    ("env-seed-strategy", ["agent", "--name", NAME],
     {"LIBCLUSTER_STRATEGY": "Cluster.Strategy.Nope"}, "LIBCLUSTER_STRATEGY"),
    ("env-hosts", ["agent", "--name", NAME, "--strategy", "epmd"], {"SKYCLUSTER_HOSTS": "bad"},
     "SKYCLUSTER_HOSTS"),
    ("env-name", ["agent"], {"SKYCLUSTER_NAME": "bad"}, "SKYCLUSTER_NAME"),
    ("env-bool", ["agent", "--name", NAME], {"SKYCLUSTER_FULL_MESH": "perhaps"},
     "SKYCLUSTER_FULL_MESH"),
    ("node-loop", ["agent", "--name", NAME, "--node-loop", "tokio"], {}, "--node-loop"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [case[1:] for case in USAGE_ERRORS],
    ids=[case[0] for case in USAGE_ERRORS],
)
def test_usage_errors_exit_2_with_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    result = run_cli(args, clean_environ(tmp_path, {"SKYCLUSTER_COOKIE": COOKIE, **env}))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert named in lines[0]
    assert result.stdout == ""
    assert COOKIE not in result.stderr


def test_seed_names_in_the_environment_work(agent_factory: AgentFactory) -> None:
    a = agent_factory("a")
    b = agent_factory(
        "b",
        env={
            "LIBCLUSTER_STRATEGY": "Cluster.Strategy.Epmd",
            "SKYCLUSTER_HOSTS": a.spec,
            "SKYCLUSTER_RETRY_INTERVAL": "0.2",
        },
    )
    formed(a, b)


def test_port_in_use_exits_1(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind((LOOPBACK, 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_cli(
            ["agent", "--name", f"a@{LOOPBACK}:{port}", "--json"],
            clean_environ(tmp_path, {"SKYCLUSTER_COOKIE": COOKIE}),
        )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "already in use" in result.stderr
    assert str(port) in result.stderr
    assert '"started"' not in result.stdout


def test_cookie_file_readable_by_others_exits_1(tmp_path: Path) -> None:
    secret = "file-cookie-0d9b2e"
    path = tmp_path / ".skycluster" / "cookie"
    path.parent.mkdir(mode=0o700)
    path.write_text(secret + "\n")
    path.chmod(0o644)
    result = run_cli(
        ["agent", "--name", f"a@{LOOPBACK}:{free_port()}", "--json"],
        clean_environ(tmp_path, {"SKYCLUSTER_COOKIE": None}),
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"chmod 600 {path}" in result.stderr
    assert secret not in result.stderr + result.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o644, "the agent must not change the mode itself"


def test_without_a_cookie_one_is_created_mode_0600(agent_factory: AgentFactory) -> None:
    no_cookie = {"SKYCLUSTER_COOKIE": None}
    a = agent_factory("a", env=no_cookie)
    path = agent_factory.home / ".skycluster" / "cookie"
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    created = path.read_text().strip()
    assert len(created) >= 16
    # a second agent of the same user reads the same file and links
    b = agent_factory("b", hosts=[a], env=no_cookie)
    formed(a, b)
    for agent in (a, b):
        assert created not in agent.output()
