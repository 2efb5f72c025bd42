"""Operations features of real ``skycluster agent`` processes: ``skycluster members``,
JSON logs without secrets, rate-limited failure logs and the HTTP endpoint flags."""

from __future__ import annotations

import json
import re
import signal

from agents import COOKIE, AgentFactory, run_cli
from cluster_helpers import eventually_blocking
from ops_helpers import get


def is_membership(event: dict[str, object]) -> bool:
    return event["event"] in ("nodeup", "nodedown")


def test_members_prints_the_view_of_a_running_node_without_any_event(
    agent_factory: AgentFactory,
) -> None:
    a = agent_factory("a", args=["--metadata", "role=api,zone=eu-1"])
    b = agent_factory("b", hosts=[a], args=["--metadata", '{"role": "worker", "version": 2}'])
    a.wait_nodeup(b.identity)
    b.wait_nodeup(a.identity)
    marks = a.mark(), b.mark()
    env = agent_factory.environ()

    shown = run_cli(["members", a.spec], env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["NODE", "ADDRESS", "SINCE", "RTT", "LINKS", "METADATA"]
    assert lines[1].startswith("*") and a.identity in lines[1] and "role=api,zone=eu-1" in lines[1]
    assert b.identity in lines[2] and b.address in lines[2] and "role=worker,version=2" in lines[2]
    assert lines[-1] == f"1 peer linked to {a.identity}; ready"

    as_json = run_cli(["members", b.spec, "--json"], env)
    assert as_json.returncode == 0, as_json.stderr
    view = json.loads(as_json.stdout)
    assert view["node"] == b.identity and view["metadata"] == {"role": "worker", "version": 2}
    (peer,) = view["peers"]
    assert peer["node"] == a.identity and peer["metadata"] == {"role": "api", "zone": "eu-1"}
    assert peer["since"] > 0 and view["hidden_peers"] in (0, 1)
    assert COOKIE not in as_json.stdout + shown.stdout

    # The tool linked hidden: nobody published anything about it.
    for agent, mark in zip((a, b), marks, strict=True):
        agent.expect_none(is_membership, 0.5, since=mark, what="membership event")
        assert not any("members" in line for line in agent.stderr_lines), agent.describe()


def test_members_fails_clearly_with_a_wrong_cookie_or_no_node(agent_factory: AgentFactory) -> None:
    a = agent_factory("a")
    wrong = run_cli(
        ["members", a.spec, "--timeout", "3"],
        agent_factory.environ({"SKYCLUSTER_COOKIE": "not-the-cookie"}),
    )
    assert wrong.returncode == 1 and "cannot link" in wrong.stderr
    assert "cookies differ" in wrong.stderr
    assert "not-the-cookie" not in wrong.stderr and COOKIE not in wrong.stderr
    nobody = run_cli(
        ["members", f"z@127.0.0.1:{agent_factory.port()}", "--timeout", "3"],
        agent_factory.environ(),
    )
    assert nobody.returncode == 1 and "z@127.0.0.1" in nobody.stderr
    bad = run_cli(["members", "no-at-sign"], agent_factory.environ())
    assert bad.returncode == 2 and "NODE" in bad.stderr


def test_json_logs_one_line_per_membership_change_and_never_the_cookie(
    agent_factory: AgentFactory,
) -> None:
    a = agent_factory("a", args=["--log-format", "json", "--log-level", "debug"])
    b = agent_factory("b", hosts=[a])
    a.wait_nodeup(b.identity)
    b.signal(signal.SIGTERM)
    assert b.wait_exit() == 0
    a.wait_nodedown(b.identity)
    a.wait_for_log(r'"event":"link.down"')
    a.signal(signal.SIGTERM)
    assert a.wait_exit() == 0
    records = []
    for line in a.stderr_lines:
        records.append(json.loads(line))  # every line is one JSON object
    ups = [r for r in records if r.get("event") == "link.up" and r.get("peer") == b.identity]
    downs = [r for r in records if r.get("event") == "link.down" and r.get("peer") == b.identity]
    assert (
        len(ups) == 1 and ups[0]["level"] == "info" and ups[0]["logger"] == "skycluster.membership"
    )
    assert len(downs) == 1 and downs[0]["reason"] == "shutdown"
    assert downs[0]["message"] == f"node {b.identity} is down: shutdown"
    everything = "\n".join(a.stderr_lines + b.stderr_lines + a.stdout_lines + b.stdout_lines)
    assert COOKIE not in everything


def test_an_unreachable_host_is_logged_once_while_it_is_retried(
    agent_factory: AgentFactory,
) -> None:
    dead = f"dead@127.0.0.1:{agent_factory.port()}"
    a = agent_factory("a", hosts=[dead], args=["--http", "127.0.0.1:0", "--log-level", "info"])
    where = a.events[0]["http"]

    def attempts() -> int:
        text = get(where, "/metrics").text
        found = re.search(
            r'skycluster_connects_total\{node="a@127.0.0.1",reason="unreachable",result="error"\} '
            r"([0-9.]+)",
            text,
        )
        return int(float(found.group(1))) if found else 0

    eventually_blocking(lambda: attempts() >= 8, "eight dials of the dead node")
    warned = [line for line in a.stderr_lines if "cannot link to dead@127.0.0.1" in line]
    assert len(warned) == 1, a.describe()


def test_http_flag_serves_loopback_and_reports_the_address(agent_factory: AgentFactory) -> None:
    a = agent_factory("a", args=["--http", "0", "--min-nodes", "1"])
    where = a.events[0]["http"]
    assert where.startswith("127.0.0.1:")
    assert get(where, "/ready").status == 503
    b = agent_factory("b", hosts=[a], env={"SKYCLUSTER_HTTP": "127.0.0.1:0"})
    assert b.events[0]["http"].startswith("127.0.0.1:")
    a.wait_nodeup(b.identity)
    assert get(where, "/ready").status == 200
    bad = agent_factory("c", args=["--http", "nowhere"], wait=False)
    assert bad.wait_exit() == 2 and "--http" in bad.output()
