"""Real agents on an overloaded host: a node that the OS stopped for a while does
not blame its peers for the silence it caused.

Agents come from the ``agent_factory`` fixture (``conftest.py``, ``agents.py``),
which kills every process at the end of a test.
"""

from __future__ import annotations

import signal
import time

from agents import LOOPBACK, AgentFactory, Event

# A round's stop is shorter than the default heartbeat timeout (3 s), so the
# stopped node's peer was never silent: its heartbeats wait unread in the socket.
STOPPED_FOR = 2.9
ROUNDS = 4


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
