"""Settings: the one table of options, their defaults and their checks.

Every option a user writes is one :class:`Option`: its keyword argument of
:class:`~skycluster.Cluster`, its default, its help, how its text is parsed (a
``--flag`` or an environment variable) and how a program's value is checked. From
the table come ``Cluster``'s keyword defaults (:data:`DEFAULTS`), ``Cluster.from_env``
and the environment (:func:`resolve`), the CLI's flags and the defaults its help
shows. :func:`node_settings` checks a set of values and builds the
:class:`~skycluster.distribution.settings.NodeSettings` the node runs on.

An option ``heartbeat_interval`` is ``--heartbeat-interval`` on the command
line and ``SKYCLUSTER_HEARTBEAT_INTERVAL`` in the environment; some also honour
the seed project's ``LIBCLUSTER_*`` names. Precedence: flag, then environment,
then the default in the table.

Layering: this module sits above the distribution layer (it builds its settings)
and below the strategies (they declare their options with :class:`Option`);
checks that need the strategies (``topologies``) live in :mod:`skycluster.strategy`.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from skycluster.distribution.epmd_protocol import EPMD_DEFAULT_PORT
from skycluster.distribution.portmapper import epmd_port_from_env
from skycluster.distribution.settings import NodeSettings, PortMapperSettings, TLSFiles
from skycluster.errors import ConfigError
from skycluster.names import NodeName, is_loopback, parse_address

ENV_PREFIX = "SKYCLUSTER_"
MAX_HANDSHAKES = 128  # concurrent unauthenticated connections per node (not an option)


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
DEFAULT_BUSY_WAIT = 0.0002  # covers a round trip between two sleeping asyncio processes


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


# -- value checks: a program's values (keyword arguments); ValueError with the accepted form


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_positive_seconds(value: Any) -> Any:
    if not (_number(value) and value > 0):
        raise ValueError("expected a positive number of seconds such as 1 or 0.5")
    return value


def check_optional_port(value: Any) -> Any:
    if value is not None and not (_whole(value) and 0 < value < 65536):
        raise ValueError("expected a port number from 1 to 65535, or None")
    return value


def check_size(value: Any) -> Any:
    if not (_whole(value) and value > 0):
        raise ValueError("expected a whole number of bytes above 0")
    return value


def check_count(value: Any) -> Any:
    if not (_whole(value) and value >= 0):
        raise ValueError("expected a whole number >= 0")
    return value


def check_listen(value: Any) -> tuple[str, int] | None:
    return None if value is None else parse_address(value)


def check_http(value: Any) -> tuple[str, int] | None:
    return None if value is None else http_address(value)


def check_optional_metadata(value: Any) -> dict[str, Any]:
    return check_metadata(value or {})


def check_node_loop(value: Any) -> str:
    if value not in NODE_LOOPS:
        raise ValueError("must be auto, asyncio, uvloop or shared")
    if value == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ValueError(
            "uvloop is not installed: pip install 'skycluster[fast]', or use auto or asyncio"
        )
    return str(value)


def check_busy_wait_value(value: Any) -> float:
    if not _number(value):
        raise ValueError("expected a number of seconds")
    check_busy_wait(value)
    return float(value)


def check_backoff(value: Any) -> tuple[float, float]:
    try:
        initial, maximum = value
        valid = _number(initial) and _number(maximum) and 0 < initial <= maximum
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError("expected (initial, maximum) seconds with 0 < initial <= maximum")
    return float(initial), float(maximum)


# -- the option table ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Option:
    """One option: keyword argument, flag and environment variables, default, help, checks."""

    key: str  # keyword argument it becomes
    parse: Callable[[str], Any] | None  # text (flag, variable) -> value; None: keyword only
    help: str  # for --help; the default is appended from ``default``
    legacy_env: tuple[str, ...] = ()  # extra variable names, e.g. the seed's LIBCLUSTER_*
    secret: bool = False  # never echo the value
    metavar: str | None = None
    multiple: bool = False  # a list: repeatable flag, comma separated in the environment
    default: Any = None  # what an unset option means
    shown_default: str | None = None  # the default in --help when the value does not say it
    check: Callable[[Any], Any] | None = None  # a program's value -> the value the node uses

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def env(self) -> tuple[str, ...]:
        return (ENV_PREFIX + self.key.upper(), *self.legacy_env)

    @property
    def spelled(self) -> str:
        """The option as the user may have written it: keyword, flag or variable."""
        if self.parse is None:
            return self.key
        return f"{self.key} ({self.flag}, {self.env[0]})"

    @property
    def help_default(self) -> str | None:
        """The default as --help shows it, or None to show none."""
        if self.shown_default is not None:
            return self.shown_default
        if self.default is None:
            return None
        if isinstance(self.default, bool):
            return str(self.default).lower()
        if isinstance(self.default, float) and self.default.is_integer():
            return str(int(self.default))
        return str(self.default)

    def convert(self, value: str, source: str) -> Any:
        """Text from a flag or a variable, parsed; ConfigError naming ``source``."""
        if self.parse is None:
            raise ConfigError(f"{source}: {self.key} can only be set by a program")
        try:
            return self.parse(value)
        except ValueError as exc:
            if not self.secret:
                raise ConfigError(f"{source}: invalid value {value!r}: {exc}") from None
            reason = str(exc)  # a parser may quote the value: take it out again
            for form in sorted({value.strip(), repr(value.strip())[1:-1]} - {""}, key=len)[::-1]:
                reason = reason.replace(form, "(hidden)")
            raise ConfigError(f"{source}: invalid value (hidden): {reason}") from None

    def checked(self, value: Any) -> Any:
        """A program's value, checked; ConfigError naming the option and the accepted form."""
        if self.check is None:
            return value
        try:
            return self.check(value)
        except ConfigError:
            raise
        except ValueError as exc:
            reason = str(exc)
            quoted = isinstance(value, str) and repr(value) in reason  # a parser's message
            got = "" if self.secret or quoted else f", got {value!r}"
            raise ConfigError(f"{self.spelled}: {reason}{got}") from None


# Options of the node: a keyword argument of Cluster, a flag of ``skycluster agent``
# and SKYCLUSTER_* variables.
NODE_OPTIONS: tuple[Option, ...] = (
    Option("name", parse_name, "node name, name@host or name@host:port", metavar="NAME"),
    Option("cookie", parse_text, "shared secret (prefer the environment)", secret=True),
    Option(
        "listen",
        parse_listen,
        "address to listen on, HOST:PORT",
        metavar="HOST:PORT",
        check=check_listen,
    ),
    Option(
        "dist_port",
        parse_port,
        "port of nodes named without a port",
        metavar="PORT",
        check=check_optional_port,
    ),
    Option(
        "heartbeat_interval",
        parse_seconds,
        "seconds between heartbeats",
        metavar="S",
        default=1.0,
        check=check_positive_seconds,
    ),
    Option(
        "heartbeat_timeout",
        parse_seconds,
        "silence before a peer is down",
        metavar="S",
        default=3.0,
        check=check_positive_seconds,
    ),
    Option(
        "handshake_timeout",
        parse_seconds,
        "seconds to authenticate",
        metavar="S",
        default=5.0,
        check=check_positive_seconds,
    ),
    Option(
        "connect_timeout",
        parse_seconds,
        "seconds to dial a peer",
        metavar="S",
        default=5.0,
        check=check_positive_seconds,
    ),
    Option("full_mesh", parse_bool, "link to peers of peers", metavar="BOOL", default=True),
    Option("hidden", parse_bool, "link without joining the mesh", metavar="BOOL", default=False),
    Option(
        "port_mapper",
        parse_bool,
        "register with the host's port mapper, serving one if none runs",
        metavar="BOOL",
        default=True,
    ),
    Option(
        "epmd_port",
        parse_port,
        "port of the port mapper",
        ("ERL_EPMD_PORT",),
        metavar="PORT",
        shown_default=str(EPMD_DEFAULT_PORT),  # None: from the environment, else this
        check=check_optional_port,
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
        check=check_optional_metadata,
    ),
    Option(
        "http",
        parse_http,
        "serve /metrics /health /ready /status /events and a live page on HOST:PORT",
        metavar="HOST:PORT",
        shown_default="off",
        check=check_http,
    ),
    Option(
        "min_nodes",
        parse_count,
        "peers linked before /ready says ready",
        metavar="N",
        default=0,
        check=check_count,
    ),
    Option(
        "node_loop",
        parse_node_loop,
        "event loop of the node's thread: auto (uvloop when installed), asyncio, uvloop; "
        "or shared (no thread: the application's loop)",
        metavar="LOOP",
        default="auto",
        check=check_node_loop,
    ),
    Option(
        "busy_wait",
        parse_busy_wait,
        "the longest the loop that reads the links (the application's) polls after "
        "traffic before it sleeps, when the traffic shows the next frame comes that soon "
        "and no other process wants the core: quicker replies, like Erlang's +sbwt",
        metavar="S",
        default=DEFAULT_BUSY_WAIT,
        shown_default=f"{DEFAULT_BUSY_WAIT}; 0: off",
        check=check_busy_wait_value,
    ),
    Option(
        "erlang",
        parse_bool,
        "also speak Erlang distribution on the listening port: erl and Elixir nodes link "
        "to this node and it to them (docs/erlang.md)",
        metavar="BOOL",
        default=False,
    ),
    Option(
        "erlang_ticktime",
        parse_seconds,
        "Erlang's net_ticktime on Erlang links: give the BEAM nodes' value",
        metavar="S",
        default=60.0,
        check=check_positive_seconds,
    ),
)

# Options only a program sets (Cluster keyword arguments): limits an operator seldom tunes.
KEYWORD_OPTIONS: tuple[Option, ...] = (
    Option(
        "max_frame_size",
        None,
        "largest frame accepted on a link, bytes",
        default=8 * 1024 * 1024,
        check=check_size,
    ),
    Option(
        "max_message_size",
        None,
        "largest message sent or accepted (encoded), bytes",
        default=64 * 1024 * 1024,
        check=check_size,
    ),
    Option(
        "send_buffer_size",
        None,
        "bytes queued per link before senders wait",
        default=4 * 1024 * 1024,
        check=check_size,
    ),
    Option(
        "strategy_restart_backoff",
        None,
        "(initial, maximum) seconds before a crashed strategy runs again",
        default=(0.5, 30.0),
        check=check_backoff,
    ),
)

OPTIONS: Mapping[str, Option] = MappingProxyType(
    {option.key: option for option in (*NODE_OPTIONS, *KEYWORD_OPTIONS)}
)
# Cluster's keyword defaults: ``heartbeat_interval: float = DEFAULTS["heartbeat_interval"]``.
DEFAULTS: Mapping[str, Any] = MappingProxyType({key: o.default for key, o in OPTIONS.items()})
# Options Cluster keeps to itself: the cookie (read by skycluster.cookie, never kept in
# the settings) and the strategies' restart backoff (the runtime's).
NOT_NODE_OPTIONS = frozenset({"cookie", "strategy_restart_backoff"})


def node_settings(values: Mapping[str, Any], environ: Mapping[str, str]) -> NodeSettings:
    """Check a program's values (Cluster's keyword arguments, or what :func:`resolve`
    read) and build the node's settings; an option left out takes its default. The
    options in :data:`NOT_NODE_OPTIONS` are Cluster's own and not taken here.

    ``name`` falls back to ``SKYCLUSTER_NAME``, then ``node<pid>@127.0.0.1``;
    ``epmd_port`` to ``SKYCLUSTER_EPMD_PORT``, then ``ERL_EPMD_PORT``, then 4369.
    Raises ConfigError naming the option, the value and the accepted form.
    """
    unknown = set(values) - (set(OPTIONS) - NOT_NODE_OPTIONS)
    if unknown:
        raise TypeError(f"node_settings() got options that are not the node's: {sorted(unknown)}")
    name = NodeName.parse(
        values.get("name") or environ.get("SKYCLUSTER_NAME") or f"node{os.getpid()}@127.0.0.1"
    )
    v = {
        key: option.checked(values.get(key, option.default))
        for key, option in OPTIONS.items()
        if key not in NOT_NODE_OPTIONS
    }
    interval, timeout = v["heartbeat_interval"], v["heartbeat_timeout"]
    if timeout <= interval:
        raise ConfigError(
            f"{OPTIONS['heartbeat_timeout'].spelled} ({timeout}) must be longer than "
            f"{OPTIONS['heartbeat_interval'].spelled} ({interval}), "
            "or every link would time out"
        )
    tls_given = [v["tls_cert"], v["tls_key"], v["tls_ca"]]
    if any(tls_given) and not all(tls_given):
        raise ConfigError(
            "TLS needs all three of tls_cert, tls_key and tls_ca "
            "(--tls-cert, --tls-key, --tls-ca; SKYCLUSTER_TLS_CERT, _KEY, _CA)"
        )
    if v["erlang"] and all(tls_given):
        raise ConfigError(
            f"{OPTIONS['erlang'].spelled} shares the listening port with Erlang distribution, "
            "which runs over plain TCP here: it cannot be combined with TLS (tls_cert, ...)"
        )
    listen_host, listen_port = v["listen"] or _listen_address(name, v["dist_port"])
    return NodeSettings(
        name=name,
        listen_host=listen_host,
        listen_port=listen_port,
        dist_port=v["dist_port"],
        heartbeat_interval=interval,
        heartbeat_timeout=timeout,
        handshake_timeout=v["handshake_timeout"],
        connect_timeout=v["connect_timeout"],
        full_mesh=v["full_mesh"],
        hidden=v["hidden"],
        max_frame_size=v["max_frame_size"],
        max_message_size=v["max_message_size"],
        send_buffer_size=v["send_buffer_size"],
        max_handshakes=MAX_HANDSHAKES,
        metadata=v["metadata"],
        tls=TLSFiles(*tls_given) if all(tls_given) else None,
        port_mapper=_port_mapper_settings(v, listen_host, environ),
        http=v["http"],
        min_nodes=v["min_nodes"],
        node_loop=v["node_loop"],
        busy_wait=v["busy_wait"],
        erlang=bool(v["erlang"]),
        erlang_ticktime=float(v["erlang_ticktime"]),
    )


def _listen_address(name: NodeName, dist_port: int | None) -> tuple[str, int]:
    """Where a node listens when ``listen`` is not given: the host and port of its name."""
    if name.is_ip:
        host = name.host
    elif name.host == "localhost":
        host = "127.0.0.1"
    else:
        host = ""  # a hostname: every interface
    return host, name.port or dist_port or 0


def _port_mapper_settings(
    values: Mapping[str, Any], listen_host: str, environ: Mapping[str, str]
) -> PortMapperSettings | None:
    if not values["port_mapper"]:
        return None
    port = values["epmd_port"]
    if port is None:
        try:
            port = epmd_port_from_env(environ)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    bind = values["epmd_bind"]
    if bind is None:
        # One port mapper per host, reached over loopback by the nodes of the host:
        # a node that listens on loopback only keeps it there; any other serves it on
        # every interface (as epmd does), so that other hosts can ask it.
        bind = "127.0.0.1" if is_loopback(listen_host) else "0.0.0.0"
    return PortMapperSettings(port=port, bind=bind)


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
