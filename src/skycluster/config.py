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

from skycluster.distribution.registration import PortMapperSettings
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
    http: tuple[str, int] | None = None  # operations endpoint (skycluster.ops); None: off
    min_nodes: int = 0  # /ready answers 200 once this many peers are linked
    # the node thread's event loop: auto, asyncio or uvloop; or "shared": no thread,
    # the node runs on the event loop that starts it (the application's)
    node_loop: str = "auto"
    busy_wait: float = 0.0  # seconds the node's loop polls after traffic before it sleeps

    @property
    def shared_loop(self) -> bool:
        """The node runs on the application's loop, without a thread of its own."""
        return self.node_loop == "shared"


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


NODE_LOOPS = ("auto", "asyncio", "uvloop", "shared")
MAX_BUSY_WAIT = 0.01  # a reply later than this is not waiting on a wake-up


def parse_busy_wait(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected seconds such as 0.0001 (100 µs), or 0 for off") from None
    check_busy_wait(value)
    return value


def check_busy_wait(value: float) -> None:
    if not math.isfinite(value) or not 0 <= value <= MAX_BUSY_WAIT:
        raise ValueError(
            f"expected seconds from 0 (off) to {MAX_BUSY_WAIT}, such as 0.0001 (100 µs)"
        )


def parse_node_loop(text: str) -> str:
    value = text.strip().lower()
    if value not in NODE_LOOPS:
        raise ValueError("expected auto, asyncio, uvloop or shared")
    return value


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


def parse_count(text: str) -> int:
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 6):
        raise ValueError("expected a whole number such as 0 or 3")
    return int(digits)


MAX_METADATA = 4 * 1024  # bytes, msgpack-encoded; the handshake refuses more


def parse_metadata(text: str) -> dict[str, Any]:
    """``role=api,zone=eu-1`` or a JSON object ``{"role": "api"}``."""
    import json

    text = text.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"expected a JSON object: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError("expected a JSON object")
        return check_metadata(value)
    pairs: dict[str, Any] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError("expected key=value pairs such as role=api,zone=eu-1")
        pairs[key.strip()] = value.strip()
    return check_metadata(pairs)


def check_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata must be a map with string keys that fits the handshake (4 KiB encoded)."""
    import msgpack

    if not all(isinstance(key, str) for key in metadata):
        raise ValueError("metadata keys must be strings")
    try:
        size = len(msgpack.packb(dict(metadata), use_bin_type=True))
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(
            f"metadata must be plain data (str, int, float, bool, lists, maps): {exc}"
        ) from None
    if size > MAX_METADATA:
        raise ValueError(f"metadata is {size} bytes encoded; at most {MAX_METADATA} are allowed")
    return dict(metadata)


def http_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT`` or a bare ``PORT`` (then loopback, 127.0.0.1);
    port 0 picks a free one."""
    text = text.strip()
    if text.isascii() and text.isdigit():
        host, port_text = "127.0.0.1", text
    else:
        host_part, sep, port_text = text.rpartition(":")
        if not sep or not host_part:
            raise ValueError("expected HOST:PORT or PORT, such as 127.0.0.1:9100 or 9100")
        host, _ = parse_address(f"{host_part}:1")
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):
        raise ValueError("expected a port number from 0 to 65535")
    port = int(port_text)
    if port > 65535:
        raise ValueError("expected a port number from 0 to 65535")
    return host, port


def parse_http(text: str) -> str:
    host, port = http_address(text)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
    Option(
        "metadata",
        parse_metadata,
        "small data shown to peers: role=api,zone=eu-1 or a JSON object (4 KiB)",
        metavar="K=V,...",
    ),
    Option(
        "http",
        parse_http,
        "serve /metrics /health /ready /status /events and a live page on HOST:PORT [off]",
        metavar="HOST:PORT",
    ),
    Option("min_nodes", parse_count, "peers linked before /ready says ready [0]", metavar="N"),
    Option(
        "node_loop",
        parse_node_loop,
        "event loop of the node's thread: auto (uvloop when installed), asyncio, uvloop; "
        "or shared (no thread: the application's loop) [auto]",
        metavar="LOOP",
    ),
    Option(
        "busy_wait",
        parse_busy_wait,
        "seconds the node's loop keeps polling after traffic before it sleeps: "
        "quicker replies for CPU time, like Erlang's +sbwt; needs --node-loop shared [0: off]",
        metavar="S",
    ),
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
