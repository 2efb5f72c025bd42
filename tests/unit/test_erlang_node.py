"""The Erlang side of a node without I/O: which connections it claims on the shared
port, the NodeDown reason of each way an Erlang link ends, and its options."""

from __future__ import annotations

import pytest

from skycluster import config
from skycluster.distribution.handshake import PREAMBLE
from skycluster.erlang.handshake import ErlangHandshake
from skycluster.erlang.node import down_reason, opens_erlang_handshake
from skycluster.errors import ConfigError
from skycluster.events import DownReason


def test_an_erlang_name_message_is_told_from_a_skycluster_hello() -> None:
    name = ErlangHandshake(
        initiator=True, name="erl@127.0.0.1", creation=1, cookie=b"c"
    ).initiate()
    longest = ErlangHandshake(
        initiator=True, name="e" * 200 + "@" + "h" * 54, creation=1, cookie=b"c"
    ).initiate()
    for first in (name, name[:1], name[:2], longest, b"\x00\x05n\x00\x06"):
        assert opens_erlang_handshake(first), first
    for first in (PREAMBLE, PREAMBLE[:1], b"GET / HTTP/1.1", b"\x16\x03\x01", b"\x00\x20X"):
        assert not opens_erlang_handshake(first), first


@pytest.mark.parametrize(
    ("ended", "reason"),
    [
        ("shutdown", DownReason.SHUTDOWN),
        ("disconnect", DownReason.DISCONNECT),
        ("net_tick_timeout", DownReason.NET_TICK_TIMEOUT),
        ("connection_closed", DownReason.CONNECTION_CLOSED),
        ("connection_closed: [Errno 104] reset", DownReason.CONNECTION_CLOSED),
        ("corrupted external term: truncated term", DownReason.PROTOCOL_ERROR),
        ("handler failed: KeyError", DownReason.PROTOCOL_ERROR),
    ],
)
def test_each_end_of_an_erlang_link_has_its_nodedown_reason(ended: str, reason: str) -> None:
    assert down_reason(ended) == reason


def test_erlang_options_come_from_the_option_table() -> None:
    values = config.resolve(
        config.NODE_OPTIONS, {"SKYCLUSTER_ERLANG": "yes", "SKYCLUSTER_ERLANG_TICKTIME": "4"}
    )
    assert values == {"erlang": True, "erlang_ticktime": 4.0}
    settings = config.node_settings(values, {})
    assert settings.erlang and settings.erlang_ticktime == 4.0
    assert not config.node_settings({}, {}).erlang
    assert config.node_settings({}, {}).erlang_ticktime == 60.0  # Erlang's default
    flags = {o.flag for o in config.NODE_OPTIONS}
    assert {"--erlang", "--erlang-ticktime"} <= flags


def test_erlang_distribution_is_not_offered_over_tls() -> None:
    tls = {"tls_cert": "c.pem", "tls_key": "k.pem", "tls_ca": "ca.pem"}
    with pytest.raises(ConfigError, match="plain TCP"):
        config.node_settings({"erlang": True, **tls}, {})
