"""What the distribution layer runs on: the node's settings, its TLS files and its
port mapper's settings, as plain frozen dataclasses.

They hold values that are already checked. The options a user writes (keyword
arguments, ``--flags``, ``SKYCLUSTER_*`` variables), their defaults and their checks
live in one table in :mod:`skycluster.config`, which builds a :class:`NodeSettings`;
this module imports nothing above the distribution layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from skycluster.distribution.epmd_protocol import EPMD_DEFAULT_PORT
from skycluster.names import NodeName

# Binds whose port mapper a node on this host reaches over loopback.
_LOOPBACK_BINDS = ("", "0.0.0.0", "::", "127.0.0.1", "::1", "localhost")


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """PEM files for mutually verified TLS on links."""

    cert: str  # this node's certificate chain
    key: str  # its private key
    ca: str  # the CA that signs every member's certificate


@dataclass(frozen=True, slots=True)
class PortMapperSettings:
    """A port mapper, as a node registers with it and as a server serves it.

    A node's come from the ``epmd_port`` and ``epmd_bind`` options; a standalone
    server (``skycluster epmd``, :class:`~skycluster.distribution.portmapper.PortMapperServer`)
    takes one directly.
    """

    port: int = EPMD_DEFAULT_PORT  # 0 (a server only): any free port, read back from server.port
    bind: str = "127.0.0.1"  # where a served port mapper listens ("" or 0.0.0.0: everywhere)
    timeout: float = 2.0  # a node's wait for the reply to one request
    request_timeout: float = 5.0  # serving: a connection's time to send its request
    max_connections: int = 1024  # serving: further connections are closed; registrations count

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"port={self.port!r}: use 0 (any free port) to 65535")
        for name in ("timeout", "request_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r}: use a number of seconds above 0")
        if self.max_connections < 1:
            raise ValueError(f"max_connections={self.max_connections!r}: use an integer >= 1")

    @property
    def client_host(self) -> str:
        """Where to register: loopback, unless the port mapper is bound to one address."""
        return "127.0.0.1" if self.bind in _LOOPBACK_BINDS else self.bind


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """One node's settings. Every field is set by :func:`skycluster.config.node_settings`,
    which holds the defaults (the option table) and the checks."""

    name: NodeName
    listen_host: str  # address the listener binds
    listen_port: int  # 0: any free port
    dist_port: int | None  # port of peers named without a port hint
    heartbeat_interval: float  # seconds between heartbeats on a link
    heartbeat_timeout: float  # silence after which a peer is down
    handshake_timeout: float  # a connection must authenticate within this
    connect_timeout: float  # TCP connect plus handshake, when dialling
    full_mesh: bool  # link to the peers of our peers (transitive connect)
    hidden: bool  # link without joining the mesh or being reported
    max_frame_size: int  # largest frame accepted on a link
    max_message_size: int  # largest message sent or accepted (encoded)
    send_buffer_size: int  # bytes queued per link before senders wait
    max_handshakes: int  # concurrent unauthenticated connections
    metadata: Mapping[str, Any]  # shown to peers in the handshake
    tls: TLSFiles | None  # None: plain TCP
    port_mapper: PortMapperSettings | None  # None: neither register nor resolve names
    http: tuple[str, int] | None  # operations endpoint (skycluster.ops); None: off
    min_nodes: int  # /ready answers 200 once this many peers are linked
    # the node thread's event loop: auto, asyncio or uvloop; or "shared": no thread,
    # the node runs on the event loop that starts it (the application's)
    node_loop: str
    busy_wait: float  # the longest the loop that reads the links polls after traffic (busypolicy)
    erlang: bool = False  # also speak Erlang distribution on the listening port
    erlang_ticktime: float = 60.0  # Erlang's net_ticktime on Erlang links

    @property
    def shared_loop(self) -> bool:
        """The node runs on the application's loop, without a thread of its own."""
        return self.node_loop == "shared"
