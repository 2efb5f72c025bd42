"""Node names: every accepted form, identity, every rejection, and fuzzing of the parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skycluster.errors import ConfigError
from skycluster.names import (
    ACCEPTED_FORMS,
    InvalidNodeName,
    NodeName,
    format_address,
    format_host,
    parse_address,
)

# --- accepted forms -------------------------------------------------------------------------

ACCEPTED: list[tuple[str, NodeName, str]] = [
    # text, parsed, str() of the parsed name
    ("api@localhost", NodeName("api", "localhost"), "api@localhost"),
    ("api@localhost:4401", NodeName("api", "localhost", 4401), "api@localhost:4401"),
    ("api@host.example.com", NodeName("api", "host.example.com"), "api@host.example.com"),
    ("api@host.example.com.", NodeName("api", "host.example.com."), "api@host.example.com."),
    ("api@my-host:1", NodeName("api", "my-host", 1), "api@my-host:1"),
    ("api@10.0.0.1", NodeName("api", "10.0.0.1"), "api@10.0.0.1"),
    ("api@127.0.0.1:65535", NodeName("api", "127.0.0.1", 65535), "api@127.0.0.1:65535"),
    ("a_b-c.d@h", NodeName("a_b-c.d", "h"), "a_b-c.d@h"),
    ("Node9@HOST", NodeName("Node9", "HOST"), "Node9@HOST"),
    ("api@[::1]", NodeName("api", "::1"), "api@[::1]"),
    ("api@[::1]:4401", NodeName("api", "::1", 4401), "api@[::1]:4401"),
    # IPv6 is normalised: compressed, lower case
    (
        "api@[2001:DB8:0:0:0:0:0:1]:7",
        NodeName("api", "2001:db8::1", 7),
        "api@[2001:db8::1]:7",
    ),
    ("api@[0:0:0:0:0:0:0:1]", NodeName("api", "::1"), "api@[::1]"),
    ("api@[fe80::1%eth0]:9", NodeName("api", "fe80::1%eth0", 9), "api@[fe80::1%eth0]:9"),
    ("api@[fe80::1%2]", NodeName("api", "fe80::1%2"), "api@[fe80::1%2]"),
    # a port with leading zeros is the same port
    ("api@h:0080", NodeName("api", "h", 80), "api@h:80"),
]


@pytest.mark.parametrize(("text", "parsed", "shown"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_accepted_forms(text: str, parsed: NodeName, shown: str) -> None:
    name = NodeName.parse(text)
    assert name == parsed
    assert str(name) == shown
    assert NodeName.parse(str(name)) == name


def test_identity_ignores_the_port() -> None:
    a = NodeName.parse("api@10.0.0.1:4401")
    b = NodeName.parse("api@10.0.0.1")
    c = NodeName.parse("api@10.0.0.1:4402")
    assert a.identity == b.identity == c.identity == "api@10.0.0.1"
    assert a != b  # the hint is part of the value, not of the identity
    assert a.with_port(None) == b
    assert b.with_port(4401) == a


def test_identity_keeps_brackets_around_ipv6() -> None:
    name = NodeName.parse("api@[2001:db8::0001]:4401")
    assert name.identity == "api@[2001:db8::1]"
    assert name.host == "2001:db8::1"
    assert NodeName.parse("api@[2001:db8:0::1]").identity == name.identity


def test_is_ip() -> None:
    assert NodeName.parse("a@127.0.0.1").is_ip
    assert NodeName.parse("a@[::1]").is_ip
    assert not NodeName.parse("a@localhost").is_ip
    assert not NodeName.parse("a@01.2.3.4").is_ip  # leading zeros: a hostname, not an address


def test_format_helpers() -> None:
    assert format_host("::1") == "[::1]"
    assert format_host("10.0.0.1") == "10.0.0.1"
    assert format_address("::1", 5) == "[::1]:5"
    assert format_address("h", 5) == "h:5"


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:4401") == ("127.0.0.1", 4401)
    assert parse_address("[::1]:4401") == ("::1", 4401)
    assert parse_address("host", default_port=9) == ("host", 9)
    with pytest.raises(ValueError, match="a port is required") as info:
        parse_address("host")
    assert "[::1]:port" in str(info.value)
    with pytest.raises(ValueError, match="not a number from 1 to 65535"):
        parse_address("host:0")


# --- rejections -----------------------------------------------------------------------------

REJECTED: list[tuple[object, str]] = [
    ("", "exactly one '@'"),
    ("api", "exactly one '@'"),
    ("a@b@c", "exactly one '@'"),
    ("@host", "before '@'"),
    ("sp ace@host", "before '@'"),
    ("n\u00e9@host", "before '@'"),
    ("a" * 256 + "@host", "before '@'"),
    ("api@", "host is empty"),
    ("api@:4401", "host is empty"),
    ("api@host:", "port ''"),
    ("api@host:0", "port '0'"),
    ("api@host:65536", "port '65536'"),
    ("api@host:-1", "port '-1'"),
    ("api@host:+1", "port '+1'"),
    ("api@host: 1", "port ' 1'"),
    ("api@host:abc", "port 'abc'"),
    ("api@host:\u00b2", "port"),  # a superscript digit: isdigit() but not a port
    ("api@host:\u0663", "port"),  # an Arabic-Indic digit
    ("api@host:" + "1" * 5000, "port"),  # longer than int() will convert
    ("api@::1", "brackets"),
    ("api@::1:4401", "brackets"),
    ("api@[::1", "closed with ']'"),
    ("api@[::1]x", "only ':port'"),
    ("api@[::1]:", "port ''"),
    ("api@[::1]:99999", "port '99999'"),
    ("api@[fe80::1%\n]", "not an interface name"),
    ("api@[fe80::1%a b]", "not an interface name"),
    ("api@[fe80::1%a,b]", "not an interface name"),
    ("api@[fe80::1%]", "not an IPv6 address"),
    ("api@[1.2.3.4]", "not an IPv6 address"),
    ("api@[]", "not an IPv6 address"),
    ("api@[host]", "not an IPv6 address"),
    ("api@-host", "not a hostname"),
    ("api@host-", "not a hostname"),
    ("api@ho_st", "not a hostname"),
    ("api@a..b", "not a hostname"),
    ("api@h\u00f6st", "not a hostname"),
    ("api@" + "a" * 64, "not a hostname"),
    ("api@" + ".".join(["a" * 60] * 5), "not a hostname"),  # longer than 253
    ("api@host/x", "not a hostname"),
    (42, "a string"),
    (None, "a string"),
]


@pytest.mark.parametrize(("text", "why"), REJECTED, ids=[repr(r[0])[:40] for r in REJECTED])
def test_rejections_say_why_and_show_accepted_forms(text: object, why: str) -> None:
    with pytest.raises(InvalidNodeName) as info:
        NodeName.parse(text)  # type: ignore[arg-type]
    message = str(info.value)
    assert why in message
    assert ACCEPTED_FORMS in message
    assert message.startswith("invalid node name ")
    assert isinstance(info.value, ConfigError)
    assert isinstance(info.value, ValueError)


# --- properties -----------------------------------------------------------------------------

name_parts = st.from_regex(r"[A-Za-z0-9_.\-]{1,20}", fullmatch=True)
labels = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9\-]{0,10}[A-Za-z0-9])?", fullmatch=True)
hostnames = st.lists(labels, min_size=1, max_size=4).map(".".join)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(lambda a: f"[{a.exploded}]")
hosts = st.one_of(hostnames, ipv4, ipv6)
ports = st.none() | st.integers(1, 65535)


@given(name_parts, hosts, ports)
def test_str_round_trips(name: str, host: str, port: int | None) -> None:
    text = f"{name}@{host}" if port is None else f"{name}@{host}:{port}"
    parsed = NodeName.parse(text)
    assert parsed.name == name
    assert parsed.port == port
    again = NodeName.parse(str(parsed))
    assert again == parsed
    assert str(again) == str(parsed)
    assert again.identity == parsed.identity == str(parsed.with_port(None))


@given(st.text(max_size=60))
def test_random_text_raises_only_invalid_node_name(text: str) -> None:
    try:
        parsed = NodeName.parse(text)
    except InvalidNodeName:
        return
    assert NodeName.parse(str(parsed)) == parsed


@given(st.text(alphabet="ab1:[]@.%-_\u00b2\u0663 ", max_size=30))
def test_random_text_from_name_characters_raises_only_invalid_node_name(text: str) -> None:
    try:
        parsed = NodeName.parse(text)
    except InvalidNodeName:
        return
    assert NodeName.parse(str(parsed)) == parsed


@given(st.text(alphabet="ab1:[]@.%\u00b2 ", max_size=30))
def test_random_addresses_raise_only_value_error(text: str) -> None:
    try:
        parse_address(text, default_port=1)
    except ValueError as exc:
        assert type(exc) in (ValueError, InvalidNodeName)
        assert "invalid" in str(exc)
