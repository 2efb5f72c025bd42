"""Pure parts of the operations features: telemetry table, histogram, log lines,
the JSON log format, option parsers and the members table."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest

from skycluster import config
from skycluster.ops import logs, members
from skycluster.ops.metrics import RTT_BUCKETS, Histogram
from skycluster.telemetry import EVENTS, Telemetry, handshake_reason

Seen = list[tuple[str, dict[str, float], dict[str, Any]]]


def recorder() -> tuple[Seen, Any]:
    seen: Seen = []

    def handler(event: str, m: Any, md: Any) -> None:
        seen.append((event, dict(m), dict(md)))

    return seen, handler


def test_handlers_get_the_events_they_attached_to_and_the_parent_gets_all() -> None:
    parent = Telemetry()
    child = Telemetry(parent=parent)
    everything, on_all = recorder()
    connects, on_connect = recorder()
    parent.attach(None, on_all)
    detach = child.attach("connect.*", on_connect)
    child.emit("connect.ok", {"duration": 0.5}, {"peer": "b@h"})
    child.emit("link.up", {}, {"peer": "b@h"})
    assert [e for e, _, _ in connects] == ["connect.ok"]
    assert connects[0][1] == {"duration": 0.5}
    assert [e for e, _, _ in everything] == ["connect.ok", "link.up"]
    detach.close()
    child.emit("connect.error", {"duration": 0.1}, {"peer": "b@h"})
    assert len(connects) == 1 and len(everything) == 3


def test_unknown_event_names_are_refused_at_attach() -> None:
    with pytest.raises(ValueError, match="unknown telemetry event"):
        Telemetry().attach("connect.maybe", lambda *a: None)
    with pytest.raises(ValueError, match="no telemetry event matches"):
        Telemetry().attach("nothing.*", lambda *a: None)


def test_a_failing_handler_is_logged_and_detached_and_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    table = Telemetry()
    seen, good = recorder()

    def bad(event: str, m: Any, md: Any) -> None:
        raise RuntimeError("boom")

    table.attach(None, bad)
    table.attach(None, good)
    with caplog.at_level(logging.ERROR, "skycluster.telemetry"):
        table.emit("link.up", {}, {})
        table.emit("link.up", {}, {})
    assert len(seen) == 2
    assert len(table) == 1
    assert sum("detached" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ("the peer could not prove the cookie (cookies differ)", "auth"),
        ("peer chose unsupported version 7", "version"),
        ("no handshake within 5.0 s", "timeout"),
        ("an HTTP request arrived on the distribution port", "not_skycluster"),
        ("not a skycluster peer (bad preamble)", "not_skycluster"),
        ("frame of 99999999 bytes exceeds the limit", "malformed"),
        ("something new", "other"),
    ],
)
def test_handshake_failures_get_short_stable_reasons(error: str, reason: str) -> None:
    assert handshake_reason(error) == reason


def test_every_documented_event_is_in_the_table() -> None:
    assert set(EVENTS) >= {"connect.ok", "connect.error", "heartbeat.timeout", "strategy.poll"}


def test_histogram_buckets_are_cumulative_and_end_at_inf() -> None:
    histogram = Histogram(RTT_BUCKETS)
    for value in (0.0001, 0.0004, 0.003, 0.2, 99.0):
        histogram.observe(value)
    buckets = dict(histogram.cumulative())
    assert buckets["0.0005"] == 2
    assert buckets["0.005"] == 3
    assert buckets["0.25"] == 4
    assert buckets["+Inf"] == 5
    assert histogram.total == pytest.approx(99.2035)


class FakeNode:
    def __init__(self) -> None:
        self.telemetry = Telemetry()

    def emit(self, event: str, m: dict[str, float], **md: Any) -> None:
        self.telemetry.emit(event, m, {"node": "a@h", **md})


def test_a_host_that_stays_unreachable_is_logged_once_then_at_debug_and_on_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = FakeNode()
    logs.MembershipLog(node)  # type: ignore[arg-type]
    with caplog.at_level(logging.DEBUG, "skycluster"):
        for _ in range(20):  # a retry every 5 s for 100 s
            node.emit(
                "connect.error", {"duration": 0.01}, peer="b@h", address="h:1", error="refused"
            )
        node.emit("connect.error", {"duration": 0.01}, peer="b@h", address="h:1", error="timed out")
        node.emit("connect.ok", {"duration": 0.01}, peer="b@h", address="h:1")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "cannot link to b@h at h:1: refused",
        "cannot link to b@h at h:1: timed out",
    ]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == ["linked to b@h after 21 failed attempts"]


def test_a_failure_that_persists_is_recalled_after_the_reminder_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = FakeNode()
    logs.MembershipLog(node, remind_after=0.0)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, "skycluster"):
        for _ in range(3):
            node.emit("connect.error", {}, peer="b@h", address=None, error="refused")
    assert [r.getMessage() for r in caplog.records] == [
        "cannot link to b@h: refused",
        "still cannot link to b@h: refused (2 attempts)",
        "still cannot link to b@h: refused (3 attempts)",
    ]


def test_membership_changes_are_one_info_line_each_with_the_reason_hidden_tools_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = FakeNode()
    logs.MembershipLog(node)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, "skycluster"):
        node.emit("link.up", {}, peer="b@h", address="h:1", hidden=False, metadata={"k": "v"})
        node.emit("link.up", {}, peer="tool@h", address="h:2", hidden=True, metadata={})
        node.emit(
            "link.down", {"duration": 3.0}, peer="b@h", reason="heartbeat_timeout", hidden=False
        )
    assert [r.getMessage() for r in caplog.records] == [
        "node b@h is up (h:1)",
        "node b@h is down: heartbeat_timeout",
    ]
    assert caplog.records[1].skycluster["reason"] == "heartbeat_timeout"  # type: ignore[attr-defined]


def test_handshake_failures_from_one_host_are_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = FakeNode()
    logs.MembershipLog(node)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, "skycluster"):
        for port in range(30):
            node.emit(
                "handshake.rejected",
                {},
                peer_address=f"10.0.0.9:{40000 + port}",
                reason="auth",
                error="the peer could not prove the cookie (cookies differ)",
                claimed="x@h",
            )
    assert len(caplog.records) == 5


def test_json_log_lines_carry_the_event_fields() -> None:
    stream = io.StringIO()
    logs.configure("info", "json", stream)
    try:
        logging.getLogger("skycluster.membership").info(
            "node %s is down: %s",
            "b@h",
            "shutdown",
            extra={"skycluster": {"event": "link.down", "peer": "b@h", "reason": "shutdown"}},
        )
    finally:
        logging.getLogger().handlers.clear()
    record = json.loads(stream.getvalue())
    assert record["message"] == "node b@h is down: shutdown"
    assert record["level"] == "info" and record["logger"] == "skycluster.membership"
    assert record["event"] == "link.down" and record["reason"] == "shutdown"
    assert record["time"].endswith("Z")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9100", ("127.0.0.1", 9100)),  # a bare port stays on loopback
        ("0.0.0.0:9100", ("0.0.0.0", 9100)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_http_addresses(text: str, expected: tuple[str, int]) -> None:
    assert config.http_address(text) == expected


@pytest.mark.parametrize("text", ["", "host", ":80", "1.2.3.4:99999", "a:b"])
def test_bad_http_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        config.http_address(text)


def test_metadata_parses_pairs_or_json_and_is_size_limited() -> None:
    assert config.parse_metadata("role=api, zone=eu-1") == {"role": "api", "zone": "eu-1"}
    assert config.parse_metadata('{"version": 3, "tags": ["a"]}') == {"version": 3, "tags": ["a"]}
    with pytest.raises(ValueError, match="key=value"):
        config.parse_metadata("role")
    with pytest.raises(ValueError, match="at most 4096"):
        config.parse_metadata("blob=" + "x" * 5000)
    with pytest.raises(ValueError, match="JSON object"):
        config.parse_metadata("{not json")
    with pytest.raises(ValueError):
        config.parse_metadata("[1, 2]")
    with pytest.raises(ValueError, match="plain data"):
        config.check_metadata({"when": object()})


def test_the_members_table_lists_the_node_first_then_its_peers() -> None:
    status = {
        "node": "a@h",
        "address": "h:1",
        "metadata": {"role": "api"},
        "started": 1000.0,
        "ready": True,
        "min_nodes": 0,
        "peers": [
            {"node": "b@h", "address": "h:2", "since": 1060.0, "rtt": 0.00042, "metadata": {},
             "links": ["a@h", "c@h"]},
            {"node": "c@h", "address": "h:3", "since": 1060.0, "rtt": None, "metadata": {},
             "links": []},
        ],
        "unlinked_pairs": 1,
    }  # fmt: skip
    lines = members.table(status, now=1120.0).splitlines()
    assert lines[0].split() == ["NODE", "ADDRESS", "SINCE", "RTT", "LINKS", "METADATA"]
    assert lines[1].startswith("*  a@h") and "role=api" in lines[1] and "(2m)" in lines[1]
    assert "b@h" in lines[2] and "0.42 ms" in lines[2] and "(1m)" in lines[2]
    assert " all " in lines[2] and "lacks a@h, b@h" in lines[3]
    assert lines[4] == "2 peers linked to a@h; ready; 1 pair should be linked and is not"


def test_the_members_table_lists_erlang_links_after_the_peers() -> None:
    status = {
        "node": "py@h",
        "address": "h:1",
        "ready": True,
        "peers": [],
        "erlang_peers": [
            {"node": "erl@h", "protocol": "erlang", "address": "h:9", "since": 1060.0,
             "hidden": False, "ticktime": 60.0},
            {"node": "tool@h", "protocol": "erlang", "address": None, "since": 1100.0,
             "hidden": True, "ticktime": 4.5},
        ],
    }  # fmt: skip
    lines = members.table(status, now=1120.0).splitlines()
    assert "erl@h" in lines[2] and "h:9" in lines[2] and "erlang, ticktime 60s" in lines[2]
    assert "tool@h" in lines[3] and "erlang hidden, ticktime 4.5s" in lines[3]
    assert lines[4] == "0 peers linked to py@h; ready; 2 Erlang links (1 hidden)"
