"""Node names: ``name@host`` identifies a node, ``name@host:port`` adds an address hint.

The host is a hostname, an IPv4 address or an IPv6 address in brackets
(``api@[::1]:4401``). Identity ignores the port: ``api@10.0.0.1:4401`` and
``api@10.0.0.1`` are the same node.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from skycluster.errors import ConfigError

ACCEPTED_FORMS = (
    "name@host, name@host:port, name@1.2.3.4:port or name@[::1]:port "
    "(name: letters, digits, '_', '-', '.'; port: 1-65535)"
)

_NAME_PART = re.compile(r"[A-Za-z0-9_.\-]{1,255}\Z")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9\-]{1,63}(?<!-)\Z")
_SCOPE = re.compile(r"[A-Za-z0-9_.\-]{1,64}\Z")  # IPv6 zone: an interface name or number


class InvalidNodeName(ConfigError):
    """A node name that is not ``name@host[:port]``; the message shows the accepted forms."""

    def __init__(self, text: str, why: str) -> None:
        super().__init__(f"invalid node name {text!r}: {why}; accepted forms: {ACCEPTED_FORMS}")
        self.text = text


@dataclass(frozen=True, slots=True)
class NodeName:
    """A parsed node name. ``identity`` is what links and events are keyed on."""

    name: str
    host: str  # IPv6 without brackets, normalised; hostnames as written
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> NodeName:
        if not isinstance(text, str):
            raise InvalidNodeName(repr(text), "a node name is a string")
        if text.count("@") != 1:
            raise InvalidNodeName(text, "it must contain exactly one '@'")
        name, rest = text.split("@")
        if not _NAME_PART.match(name):
            raise InvalidNodeName(text, f"the part before '@' ({name!r}) is not a valid name")
        host, port = _split_host_port(text, rest)
        return cls(name, host, port)

    @property
    def identity(self) -> str:
        """``name@host``, the node's identity (brackets kept around IPv6)."""
        return f"{self.name}@{format_host(self.host)}"

    @property
    def is_ip(self) -> bool:
        return is_ip(self.host)

    def with_port(self, port: int | None) -> NodeName:
        return NodeName(self.name, self.host, port)

    def __str__(self) -> str:
        if self.port is None:
            return self.identity
        return f"{self.identity}:{self.port}"


def valid_name(name: str) -> bool:
    """Whether ``name`` may stand before the '@' of a node name."""
    return bool(_NAME_PART.match(name))


def format_host(host: str) -> str:
    """Host as written in names and addresses: IPv6 in brackets."""
    return f"[{host}]" if ":" in host else host


def format_address(host: str, port: int) -> str:
    return f"{format_host(host)}:{port}"


def parse_address(text: str, *, default_port: int | None = None) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` (port optional when ``default_port`` is given)."""
    host, port = _split_host_port(text, text)
    if port is None:
        if default_port is None:
            raise ValueError(
                f"invalid address {text!r}: a port is required; accepted forms: "
                "host:port, 1.2.3.4:port, [::1]:port"
            )
        port = default_port
    return host, port


def _split_host_port(text: str, rest: str) -> tuple[str, int | None]:
    port_text: str | None = None
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise _bad(text, "an IPv6 address must be closed with ']'")
        host, tail = rest[1:end], rest[end + 1 :]
        if tail:
            if not tail.startswith(":"):
                raise _bad(text, "only ':port' may follow ']'")
            port_text = tail[1:]
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise _bad(text, f"{host!r} is not an IPv6 address") from None
        if "%" in host and not _SCOPE.match(host.partition("%")[2]):
            # ipaddress takes any text as a zone; an interface name is all a zone can be
            raise _bad(text, f"the zone of {host!r} is not an interface name")
    else:
        if rest.count(":") > 1:
            raise _bad(text, "put an IPv6 address in brackets, as in name@[::1]:4401")
        host, sep, port_text_ = rest.partition(":")
        port_text = port_text_ if sep else None
        if not host:
            raise _bad(text, "the host is empty")
        if not is_ip(host) and not _is_hostname(host):
            raise _bad(text, f"{host!r} is not a hostname or IP address")
    return host, (None if port_text is None else _parse_port(text, port_text))


def _parse_port(text: str, port_text: str) -> int:
    # ASCII digits only: str.isdigit() also accepts '²' (which int() rejects) and
    # other scripts' digits; more than 5 digits cannot be a port (and int() refuses
    # strings of thousands of digits).
    digits = port_text.isascii() and port_text.isdigit() and len(port_text) <= 5
    if not digits or not 0 < int(port_text) < 65536:
        raise _bad(text, f"the port {port_text!r} is not a number from 1 to 65535")
    return int(port_text)


def _bad(text: str, why: str) -> ValueError:
    return (
        InvalidNodeName(text, why)
        if "@" in text
        else ValueError(f"invalid address {text!r}: {why}")
    )


def is_ip(host: str) -> bool:
    """``host`` is an IPv4 or IPv6 address (no brackets)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """``host`` is a loopback IP address (a name such as localhost is not)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_hostname(host: str) -> bool:
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    return len(host) <= 253 and all(_HOST_LABEL.match(label) for label in labels)
