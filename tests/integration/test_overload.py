"""Real agents on an overloaded host: a node that the OS stopped for a while does
not blame its peers for the silence it caused, and busy CPUs beside a cluster
take nobody down.

Agents come from the ``agent_factory`` fixture (``conftest.py``, ``agents.py``),
which kills every process at the end of a test.
"""

from __future__ import annotations

import signal
import sys
import time

import pytest
from agents import LOOPBACK, AgentFactory, Event

# A round's stop is shorter than the default heartbeat timeout (3 s), so the
# stopped node's peer was never silent: its heartbeats wait unread in the socket.
STOPPED_FOR = 2.9
ROUNDS = 4
BUSY_LOOPS = 2
LOADED_FOR = 10.0
CLUSTER = 24


def is_nodedown(event: Event) -> bool:
    return event["event"] == "nodedown"


def test_a_node_stopped_for_less_than_its_timeout_keeps_its_peer(
    agent_factory: AgentFactory,
) -> None:
    # Default heartbeats on a; b waits 30 s, so a nodedown can only come from a's verdict.
    port_b = agent_factory.port()
    a = agent_factory("a", hosts=[f"b@{LOOPBACK}:{port_b}"])
    b = agent_factory("b", port=port_b, hosts=[a], args=["--heartbeat-timeout", "30"])
    a.wait_nodeup(b.identity)
    b.wait_nodeup(a.identity)
    for _ in range(ROUNDS):
        mark_a, mark_b = a.mark(), b.mark()
        a.signal(signal.SIGSTOP)
        time.sleep(STOPPED_FOR)
        a.signal(signal.SIGCONT)
        # After SIGCONT a's loop runs its timers and reads b's pending heartbeats.
        a.expect_none(is_nodedown, 2.0, since=mark_a, what="nodedown after SIGCONT")
        b.expect_none(is_nodedown, 0, since=mark_b, what="nodedown of the stopped node")


@pytest.mark.slow
def test_busy_cpus_beside_a_cluster_take_nobody_down(agent_factory: AgentFactory) -> None:
    # Default heartbeats (1 s, 3 s); every node is told about the first one only.
    first = agent_factory("n0")
    agents = [first] + [
        agent_factory(f"n{k}", hosts=[first], wait=False) for k in range(1, CLUSTER)
    ]
    everyone = {agent.identity for agent in agents}
    for agent in agents:
        agent.wait_linked(everyone - {agent.identity}, timeout=60)
    marks = {agent.identity: agent.mark() for agent in agents}
    busy = [
        agent_factory.spawn(f"busy{k}", [sys.executable, "-c", "while 1: pass"])
        for k in range(BUSY_LOOPS)
    ]
    time.sleep(LOADED_FOR)
    for process in busy:
        process.kill()
    time.sleep(1.0)  # verdicts reached during the load are printed by now
    downs = {
        agent.identity: [e for e in agent.events_since(marks[agent.identity]) if is_nodedown(e)]
        for agent in agents
    }
    downs = {node: events for node, events in downs.items() if events}
    assert not downs, f"nodedowns under load: {downs}"
