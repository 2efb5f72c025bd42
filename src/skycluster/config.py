"""Settings: one typed dataclass for the node, and the table that maps every
option to its CLI flag and environment variables (derived here, once).

An option ``heartbeat_interval`` is ``--heartbeat-interval`` on the command
line and ``SKYCLUSTER_HEARTBEAT_INTERVAL`` in the environment; some also honour
the seed project's ``LIBCLUSTER_*`` names. Precedence: flag, then environment,
then the default written next to the field.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from skycluster.dist.registration import PortMapperSettings
from skycluster.errors import ConfigError
from skycluster.names import NodeName, parse_address

ENV_PREFIX = "SKYCLUSTER_"


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """PEM files for mutually verified TLS on links."""

    cert: str  # this node's certificate chain
    key: str  # its private key
    ca: str  # the CA that signs every member's certificate


@dataclass(frozen=True, slots=True)
class NodeSettings:
    name: NodeName
    listen_host: str  # address the listener binds
    listen_port: int  # 0: any free port
    dist_port: int | None = None  # port of peers named without a port hint
    heartbeat_interval: float = 1.0  # seconds between heartbeats on a link
    heartbeat_timeout: float = 3.0  # silence after which a peer is down
    handshake_timeout: float = 5.0  # a connection must authenticate within this
    connect_timeout: float = 5.0  # TCP connect plus handshake, when dialling
    full_mesh: bool = True  # link to the peers of our peers (transitive connect)
    hidden: bool = False  # link without joining the mesh or being reported
    max_frame_size: int = 8 * 1024 * 1024  # largest frame accepted on a link
    max_message_size: int = 64 * 1024 * 1024  # largest message sent or accepted (encoded)
    send_buffer_size: int = 4 * 1024 * 1024  # bytes queued per link before senders wait
    max_handshakes: int = 128  # concurrent unauthenticated connections
    metadata: Mapping[str, Any] = field(default_factory=dict)
    tls: TLSFiles | None = None
    port_mapper: PortMapperSettings | None = None  # None: neither register nor resolve names


# -- value parsers: each raises ValueError with the accepted form -------------


def parse_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number of seconds such as 1 or 0.5") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError("expected a positive number of seconds such as 1 or 0.5")
    return value


def parse_port(text: str) -> int:
    digits = text.strip()
    # ASCII digits only ('²'.isdigit() is true, but int() refuses it), at most 5 of them
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 5) or not (
        0 < int(digits) < 65536
    ):
        raise ValueError("expected a port number from 1 to 65535")
    return int(digits)


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false (also 1/0, yes/no, on/off)")


def parse_text(text: str) -> str:
    if not text.strip():
        raise ValueError("expected a non-empty value")
    return text.strip()


def parse_name(text: str) -> str:
    return str(NodeName.parse(text.strip()))


def parse_names(text: str) -> list[str]:
    """Comma or whitespace separated node names."""
    names = [part for part in text.replace(",", " ").split() if part]
    return [str(NodeName.parse(name)) for name in names]


def parse_listen(text: str) -> str:
    host, port = parse_address(text.strip())
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- the option table ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Option:
    key: str  # keyword argument it becomes
    parse: Callable[[str], Any]
    help: str
    legacy_env: tuple[str, ...] = ()  # extra variable names, e.g. the seed's LIBCLUSTER_*
    secret: bool = False  # never echo the value
    metavar: str | None = None
    flag_only: bool = False  # a boolean switch on the command line (--hidden)
    multiple: bool = False  # a list: repeatable flag, comma separated in the environment

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def env(self) -> tuple[str, ...]:
        return (ENV_PREFIX + self.key.upper(), *self.legacy_env)

    def convert(self, value: str, source: str) -> Any:
        try:
            return self.parse(value)
        except ValueError as exc:
            if not self.secret:
                raise ConfigError(f"{source}: invalid value {value!r}: {exc}") from None
            reason = str(exc)  # a parser may quote the value: take it out again
            for form in sorted({value.strip(), repr(value.strip())[1:-1]} - {""}, key=len)[::-1]:
                reason = reason.replace(form, "(hidden)")
            raise ConfigError(f"{source}: invalid value (hidden): {reason}") from None


NODE_OPTIONS: tuple[Option, ...] = (
    Option("name", parse_name, "node name, name@host or name@host:port", metavar="NAME"),
    Option("cookie", parse_text, "shared secret (prefer the environment)", secret=True),
    Option("listen", parse_listen, "address to listen on, HOST:PORT", metavar="HOST:PORT"),
    Option("dist_port", parse_port, "port of nodes named without a port", metavar="PORT"),
    Option("heartbeat_interval", parse_seconds, "seconds between heartbeats [1]", metavar="S"),
    Option("heartbeat_timeout", parse_seconds, "silence before a peer is down [3]", metavar="S"),
    Option("handshake_timeout", parse_seconds, "seconds to authenticate [5]", metavar="S"),
    Option("connect_timeout", parse_seconds, "seconds to dial a peer [5]", metavar="S"),
    Option("full_mesh", parse_bool, "link to peers of peers [true]", metavar="BOOL"),
    Option("hidden", parse_bool, "link without joining the mesh [false]", metavar="BOOL"),
    Option(
        "port_mapper",
        parse_bool,
        "register with the host's port mapper, serving one if none runs [true]",
        metavar="BOOL",
    ),
    Option(
        "epmd_port",
        parse_port,
        "port of the port mapper [4369]",
        ("ERL_EPMD_PORT",),
        metavar="PORT",
    ),
    Option("epmd_bind", parse_text, "address an embedded port mapper binds", metavar="HOST"),
    Option("tls_cert", parse_text, "PEM certificate for TLS links", metavar="FILE"),
    Option("tls_key", parse_text, "PEM private key for TLS links", metavar="FILE"),
    Option("tls_ca", parse_text, "PEM CA that signs members' certificates", metavar="FILE"),
)


def resolve(
    options: Iterable[Option],
    environ: Mapping[str, str],
    flags: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Values for the options that a flag or an environment variable sets."""
    flags = flags or {}
    values: dict[str, Any] = {}
    for option in options:
        flag_value = flags.get(option.key)
        if flag_value is not None:
            if option.multiple and isinstance(flag_value, list):
                values[option.key] = [
                    option.convert(item, option.flag) if isinstance(item, str) else item
                    for item in flag_value
                ]
            else:
                values[option.key] = (
                    option.convert(flag_value, option.flag)
                    if isinstance(flag_value, str)
                    else flag_value
                )
            continue
        for variable in option.env:
            raw = environ.get(variable)
            if raw is not None and raw != "":
                source = f"environment variable {variable}"
                if option.multiple:
                    values[option.key] = [
                        option.convert(item, source) for item in raw.split(",") if item.strip()
                    ]
                else:
                    values[option.key] = option.convert(raw, source)
                break
    return values


def env_value(environ: Mapping[str, str], names: Sequence[str]) -> tuple[str, str] | None:
    """The first set variable of ``names`` as (name, value)."""
    for name in names:
        value = environ.get(name)
        if value:
            return name, value
    return None
