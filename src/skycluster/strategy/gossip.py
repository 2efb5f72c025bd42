"""Gossip strategy (the seed's ``Cluster.Strategy.Gossip``): every node multicasts a
heartbeat naming itself and where it accepts links; every node that hears one
from a node it is not linked to links to it.

This file only moves bytes: packets are built and checked by the sans-I/O codec
in :mod:`skycluster.strategy.gossip_packet`. A heartbeat never lets a node in by itself:
it only leads to a link attempt, which still has to pass the cookie handshake.

Sockets: ``SO_REUSEADDR`` and ``SO_REUSEPORT`` (several nodes on one host share
the port), multicast loopback on (nodes on one host hear each other), the group
joined on ``multicast_if`` (or the interface the kernel picks), ``IP_MULTICAST_ALL``
off (only our group reaches the socket); or plain UDP broadcast with
``broadcast_only``. An IPv6 group (``ff02::4b59``: this link) works the same way
over an IPv6 socket; its interface is given by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import os
import random
import socket
import stat
import struct
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from skycluster._backoff import Backoff
from skycluster._ratelimit import RateLimit
from skycluster._tasks import TaskSet
from skycluster.config import Option, parse_bool, parse_port, parse_seconds, parse_text
from skycluster.errors import ConfigError
from skycluster.names import NodeName, format_address
from skycluster.strategy.base import Strategy, StrategyContext
from skycluster.strategy.gossip_packet import (
    DEFAULT_MAX_AGE,
    Drop,
    DropReason,
    GossipCodec,
    Heartbeat,
)

log = logging.getLogger("skycluster.strategy.gossip")

DEFAULT_PORT = 45892
DEFAULT_MULTICAST_ADDR = "230.1.1.251"
BROADCAST_ADDR = "255.255.255.255"
LOG_INTERVAL = 10.0  # seconds: each kind of problem is logged at most once per interval
MAX_PACKETS_PER_SECOND = 1000  # beyond this rate, packets are dropped unread ("flood")
MAX_DIALS = 32  # link attempts started by gossip at once
MAX_RETRY_DELAY = 30.0  # longest pause before trying a node that could not be linked again
JITTER = 0.25  # each pause is the interval times a random factor in [1 - JITTER, 1 + JITTER]
_IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)  # Linux only
_IPV6_MULTICAST_ALL = 29  # Linux only (4.20 and later)
# Packets other programs or clusters legitimately send on a shared group: logged at INFO.
_QUIET = frozenset({DropReason.FOREIGN, DropReason.OTHER_CLUSTER})


# -- option values ----------------------------------------------------------------


def parse_ipv4(text: str) -> str:
    """``10.0.0.1``; the seed's tuple form ``{10,0,0,1}`` is accepted too."""
    cleaned = text.strip().strip("{}").replace(",", ".").replace(" ", "")
    try:
        return str(ipaddress.IPv4Address(cleaned))
    except ValueError:
        raise ValueError("expected an IPv4 address such as 0.0.0.0 or 230.1.1.251") from None


def parse_ip(text: str) -> str:
    """An IPv4 address (as :func:`parse_ipv4`) or an IPv6 one, brackets allowed."""
    try:
        return parse_ipv4(text)
    except ValueError:
        pass
    try:
        return str(ipaddress.IPv6Address(text.strip().removeprefix("[").removesuffix("]")))
    except ValueError:
        raise ValueError(
            "expected an IP address such as 0.0.0.0, 230.1.1.251, :: or ff02::4b59"
        ) from None


def parse_ttl(text: str) -> int:
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 3 and int(digits) <= 255):
        raise ValueError("expected a hop count from 0 to 255 (1: this network only)")
    return int(digits)


def parse_interface(text: str) -> str:
    """An interface's IPv4 address or (Linux) its name, such as eth0."""
    value = text.strip()
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        pass
    if not value or len(value) > 15 or any(c in value for c in "/ \t:"):
        raise ValueError("expected an interface address such as 10.0.0.5 or a name such as eth0")
    return value


# -- the strategy -----------------------------------------------------------------


class Gossip(Strategy):
    """Multicast UDP heartbeats; link to every node heard.

    ``secret`` (one or several; the first seals, all are accepted) encrypts and
    authenticates heartbeats; nodes with different secrets, or with and
    without one, ignore each other. ``label`` keeps clusters apart that share a
    group. ``broadcast_only`` sends UDP broadcasts to ``multicast_addr`` when
    that is a broadcast address (e.g. ``10.0.0.255``), else to 255.255.255.255.
    """

    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "multicast_port",
            parse_port,
            f"gossip UDP port [{DEFAULT_PORT}]",
            ("LIBCLUSTER_MULTICAST_PORT",),
            metavar="PORT",
        ),
        Option(
            "if_addr",
            parse_ip,
            "address the gossip socket binds [0.0.0.0: every interface]",
            ("LIBCLUSTER_MULTICAST_PORT_IF_ADDR",),
            metavar="ADDR",
        ),
        Option(
            "multicast_addr",
            parse_ip,
            f"gossip multicast group, IPv4 or IPv6 (broadcast address with --broadcast-only) "
            f"[{DEFAULT_MULTICAST_ADDR}]",
            ("LIBCLUSTER_MULTICAST_ADDR",),
            metavar="ADDR",
        ),
        Option(
            "multicast_ttl",
            parse_ttl,
            "hops a heartbeat may travel [1: this network only]",
            ("LIBCLUSTER_MULTICAST_TTL",),
            metavar="N",
        ),
        Option(
            "multicast_if",
            parse_interface,
            "interface that sends and joins the group, address or name [chosen by routing]",
            metavar="IF",
        ),
        Option(
            "broadcast_only",
            parse_bool,
            "plain UDP broadcast, for networks without multicast [false]",
        ),
        Option("gossip_interval", parse_seconds, "seconds between heartbeats [1]", metavar="S"),
        Option(
            "secret",
            parse_text,
            "encrypt and authenticate heartbeats; repeat to accept several, the first sends",
            secret=True,
            multiple=True,
        ),
        Option(
            "secret_file",
            parse_text,
            "file with the secret(s), one per line (a mounted Kubernetes Secret) [none]",
            metavar="FILE",
        ),
        Option("gossip_label", parse_text, "cluster label, separates clusters [none]", metavar="L"),
    )

    # option key -> constructor argument
    _RENAMED: ClassVar[dict[str, str]] = {
        "multicast_port": "port",
        "gossip_interval": "interval",
        "gossip_label": "label",
    }

    def __init__(
        self,
        port: int = DEFAULT_PORT,
        if_addr: str = "0.0.0.0",
        multicast_addr: str = DEFAULT_MULTICAST_ADDR,
        multicast_ttl: int = 1,
        multicast_if: str | None = None,
        broadcast_only: bool = False,
        interval: float = 1.0,
        secret: str | bytes | Sequence[str | bytes] | None = None,
        label: str = "",
        max_age: float = DEFAULT_MAX_AGE,
        secret_file: str | None = None,
    ) -> None:
        if type(port) is not int or not 0 < port < 65536:
            raise ConfigError(f"gossip port must be from 1 to 65535, got {port!r}")
        self.port = port
        self.multicast_addr = _option("multicast_addr", multicast_addr, parse_ip)
        group = ipaddress.ip_address(self.multicast_addr)
        self.ipv6 = group.version == 6
        if self.ipv6 and if_addr == "0.0.0.0":
            if_addr = "::"  # the default, for an IPv6 group
        self.if_addr = _option("if_addr", if_addr, parse_ip)
        if ipaddress.ip_address(self.if_addr).version != group.version:
            raise ConfigError(
                f"if_addr {self.if_addr} and multicast_addr {self.multicast_addr} are not of "
                "the same IP version: give both as IPv4 or both as IPv6 (:: binds every address)"
            )
        self.broadcast_only = bool(broadcast_only)
        if self.broadcast_only and self.ipv6:
            raise ConfigError(
                f"broadcast_only with multicast_addr {self.multicast_addr}: IPv6 has no "
                "broadcast; give an IPv6 multicast group (ff02::4b59) without broadcast_only"
            )
        if not self.broadcast_only and not group.is_multicast:
            raise ConfigError(
                f"multicast_addr {self.multicast_addr} is not a multicast group "
                "(224.0.0.0 to 239.255.255.255, or ff00::/8); for a broadcast address "
                "set broadcast_only"
            )
        if type(multicast_ttl) is not int or not 0 <= multicast_ttl <= 255:
            raise ConfigError(f"multicast_ttl must be from 0 to 255, got {multicast_ttl!r}")
        self.multicast_ttl = multicast_ttl
        self.multicast_if = (
            None if multicast_if is None else _option("multicast_if", multicast_if, parse_interface)
        )
        if self.multicast_if is not None:
            _interface(self.multicast_if, self.ipv6)  # fails now, with the reason
        if not (isinstance(interval, int | float) and math.isfinite(interval) and interval > 0):
            raise ConfigError(f"gossip interval must be a positive number of seconds: {interval!r}")
        self.interval = float(interval)
        if not (isinstance(max_age, int | float) and max_age > 0):
            raise ConfigError(f"max_age must be a positive number of seconds, got {max_age!r}")
        self.max_age = float(max_age)
        if secret is None:
            secrets: list[str | bytes] = []
        elif isinstance(secret, str | bytes):
            secrets = [secret]
        else:
            secrets = list(secret)
        self.given_secrets = tuple(secrets)
        self.secret_file = secret_file
        self.secret_version: FileVersion | None = None  # of what was read from secret_file
        if secret_file is not None:
            from_file, self.secret_version = read_secret_file(secret_file)
            secrets.extend(from_file)  # after `secret`: that one sends
        self.secrets = secrets
        self.label = label
        GossipCodec(secrets, label, max_age)  # checks secrets, label and the crypto package now

    @classmethod
    def from_options(cls, values: Mapping[str, Any]) -> Strategy:
        return cls(**{cls._RENAMED.get(key, key): value for key, value in values.items()})

    @property
    def destination(self) -> tuple[str, int]:
        """Where heartbeats are sent."""
        if self.broadcast_only and ipaddress.IPv4Address(self.multicast_addr).is_multicast:
            return BROADCAST_ADDR, self.port
        return self.multicast_addr, self.port

    async def run(self, ctx: StrategyContext) -> None:
        await _Run(self, ctx).serve()

    def __repr__(self) -> str:
        mode = "broadcast" if self.broadcast_only else f"ttl={self.multicast_ttl}"
        secrets = f", secrets={len(self.secrets)}" if self.secrets else ""
        return (
            f"Gossip({self.multicast_addr}:{self.port}, if_addr={self.if_addr}, "
            f"multicast_if={self.multicast_if}, {mode}, interval={self.interval}{secrets})"
        )


MAX_SECRET_FILE = 64 * 1024


FileVersion = tuple[int, int, int]  # inode, mtime (ns), size: changes when the file does


def _version(info: os.stat_result) -> FileVersion:
    return info.st_ino, info.st_mtime_ns, info.st_size


def file_version(path: str) -> FileVersion | None:
    try:
        return _version(os.stat(path))
    except OSError:
        return None


def read_secret_file(path: str) -> tuple[list[str], FileVersion]:
    """The secrets in ``path``, one per line (blank lines and lines starting with
    ``#`` skipped), and the version of the file they came from. Errors name the
    file and what to fix, never its content."""
    where = f"secret_file {path!r}"
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as file:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError(f"{where} is not a regular file")
            data = file.read(MAX_SECRET_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it ({exc.strerror})") from None
    if len(data) > MAX_SECRET_FILE:
        raise ConfigError(f"{where} is larger than 64 KiB: give a file of secrets, one per line")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where} is not UTF-8 text") from None
    lines = (line.strip() for line in text.splitlines())
    secrets = [line for line in lines if line and not line.startswith("#")]
    if not secrets:
        raise ConfigError(f"{where} holds no secret: write one per line")
    if info.st_mode & stat.S_IROTH:
        log.warning(
            "%s can be read by every user of this host (mode %o): chmod 600 it "
            "(a Kubernetes Secret volume: defaultMode: 0400)",
            where,
            stat.S_IMODE(info.st_mode),
        )
    return secrets, _version(info)


def _option(name: str, value: Any, parse: Any) -> Any:
    try:
        return parse(str(value))
    except ValueError as exc:
        raise ConfigError(f"{name}: invalid value {value!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class _Interface:
    address: bytes  # 4 bytes; 0.0.0.0 when given by name
    index: int  # 0 when given by address


def _interface(spec: str | None, ipv6: bool = False) -> _Interface:
    if spec is None:
        return _Interface(bytes(4), 0)
    try:
        address = socket.inet_aton(str(ipaddress.IPv4Address(spec)))
    except ValueError:
        pass
    else:
        if ipv6:
            raise ConfigError(
                f"multicast_if {spec!r}: an IPv6 group is joined on an interface given by "
                "name, such as eth0"
            )
        return _Interface(address, 0)
    if not sys.platform.startswith("linux") and not ipv6:
        raise ConfigError(f"multicast_if {spec!r}: give the interface's IPv4 address")
    try:
        return _Interface(bytes(4), socket.if_nametoindex(spec))
    except OSError:
        raise ConfigError(
            f"multicast_if {spec!r}: no such network interface "
            "(give an interface name such as eth0 or its IPv4 address)"
        ) from None


def open_socket(strategy: Gossip) -> socket.socket:
    """The gossip socket, bound and (for multicast) joined; raises OSError."""
    family = socket.AF_INET6 if strategy.ipv6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if strategy.broadcast_only:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        elif strategy.ipv6:
            _join_ipv6(sock, strategy)
        else:
            _join_ipv4(sock, strategy)
        sock.bind((strategy.if_addr, strategy.port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _join_ipv4(sock: socket.socket, strategy: Gossip) -> None:
    iface = _interface(strategy.multicast_if)
    group = socket.inet_aton(strategy.multicast_addr)
    if sys.platform.startswith("linux"):
        mreq = struct.pack("4s4si", group, iface.address, iface.index)  # ip_mreqn
        select = struct.pack("4s4si", bytes(4), iface.address, iface.index)
        sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
    else:
        mreq = struct.pack("4s4s", group, iface.address)
        select = iface.address
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, strategy.multicast_ttl)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    if strategy.multicast_if is not None:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, select)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)


def _join_ipv6(sock: socket.socket, strategy: Gossip) -> None:
    """The same for an IPv6 group: joined on ``multicast_if`` (an interface index;
    0 lets the kernel choose), hop limit ``multicast_ttl``."""
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    index = _interface(strategy.multicast_if, ipv6=True).index
    group = socket.inet_pton(socket.AF_INET6, strategy.multicast_addr)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):  # before Linux 4.20 every group reaches us
            sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MULTICAST_ALL, 0)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, strategy.multicast_ttl)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
    if index:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group + struct.pack("@I", index))


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, run: _Run) -> None:
        self.run = run

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.run.received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.run.problem("send", "gossip socket error: %s", exc)


class _Run:
    """One run of the strategy: its socket, sender, link attempts and counters."""

    def __init__(self, strategy: Gossip, ctx: StrategyContext) -> None:
        self.strategy = strategy
        self.ctx = ctx
        self.log = ctx.log
        self.codec = GossipCodec(strategy.secrets, strategy.label, strategy.max_age)
        self.incarnation = random.getrandbits(63)
        self.seq = 0
        self.loop = asyncio.get_running_loop()
        self.tasks = TaskSet(ctx.log)
        self.dialling: set[str] = set()
        self.retry: dict[str, tuple[float, Backoff]] = {}  # identity -> (not before, backoff)
        self.tokens = float(MAX_PACKETS_PER_SECOND)
        self.refilled = self.loop.time()
        self.reported = RateLimit(window=LOG_INTERVAL, clock=self.loop.time)  # per kind of problem
        self.transport: asyncio.DatagramTransport | None = None

    async def serve(self) -> None:
        strategy = self.strategy
        backoff = Backoff(min(strategy.interval, MAX_RETRY_DELAY), MAX_RETRY_DELAY)
        try:
            while True:
                try:
                    sock = open_socket(strategy)
                    break
                except OSError as exc:
                    delay = backoff.next()
                    self.ctx.count("gossip_socket_errors")
                    if strategy.broadcast_only:
                        hint = "check if_addr (--if-addr): it must be an address of this host"
                    else:
                        hint = "choose the interface with multicast_if (--multicast-if)" + (
                            "" if strategy.ipv6 else ", or add a route for 224.0.0.0/4"
                        )
                    self.problem(
                        "socket",
                        "cannot open the gossip socket on %s:%d (%s); retrying in %.1f s: %s",
                        strategy.if_addr,
                        strategy.port,
                        exc.strerror or exc,
                        delay,
                        hint,
                        level=logging.ERROR,
                    )
                    await asyncio.sleep(delay)
            try:
                transport, _ = await self.loop.create_datagram_endpoint(
                    lambda: _Protocol(self), sock=sock
                )
            except BaseException:
                sock.close()
                raise
            self.transport = transport
            self.log.info(
                "gossip on %s:%d (%s%s)",
                *strategy.destination,
                "broadcast" if strategy.broadcast_only else "multicast",
                ", sealed" if self.codec.sealed else "",
            )
            while True:
                self.reload_secrets()
                self.send()
                self.forget_old_retries()
                await asyncio.sleep(strategy.interval * random.uniform(1 - JITTER, 1 + JITTER))
        finally:
            if self.transport is not None:
                self.transport.close()
            await self.tasks.aclose()

    # -- secrets ----------------------------------------------------------------

    def reload_secrets(self) -> None:
        """Take the secret file's new content when it changes (a Kubernetes Secret
        volume is updated in place): rotation without a restart. A file that became
        unreadable or bad keeps the secrets read before, with a warning."""
        strategy = self.strategy
        path = strategy.secret_file
        if path is None:
            return
        version = file_version(path)
        if version == strategy.secret_version:
            return
        strategy.secret_version = version  # a bad file is reported once, not every beat
        try:
            from_file, strategy.secret_version = read_secret_file(path)
            secrets = [*strategy.given_secrets, *from_file]
            if secrets == strategy.secrets:
                return  # touched, not changed
            self.codec.rekey(secrets)
        except ConfigError as exc:
            self.ctx.count("gossip_secret_reload_errors")
            self.problem("secret_file", "%s; keeping the secrets read before", exc)
            return
        strategy.secrets = secrets
        self.ctx.count("gossip_secret_reloads")
        self.log.info("gossip secrets reloaded from %s (%d in all)", path, len(secrets))

    # -- sending ----------------------------------------------------------------

    def send(self) -> None:
        assert self.transport is not None
        beat = Heartbeat(self.ctx.advertised_name, self.incarnation, self.seq, _now_ms())
        self.seq += 1
        packet = self.codec.encode(beat)
        self.transport.sendto(packet, self.strategy.destination)
        self.ctx.count("gossip_sent")
        self.ctx.count("gossip_bytes_sent", len(packet))

    # -- receiving --------------------------------------------------------------

    def received(self, data: bytes, addr: tuple[Any, int]) -> None:
        if not self.take_token():
            self.dropped(Drop(DropReason.FLOOD, "over the rate limit"), addr)
            return
        result = self.codec.decode(data, time.time())
        if isinstance(result, Drop):
            self.dropped(result, addr)
            return
        me = self.ctx.node_name.identity
        ident = result.node.identity
        if ident == me:
            self.ctx.count("gossip_own")
            if result.incarnation != self.incarnation:
                self.problem(
                    "name clash",
                    "another node at %s calls itself %s: give every node its own name",
                    addr[0],
                    me,
                )
            return
        self.ctx.count("gossip_received")
        if ident in self.ctx.nodes():
            return
        self.link(result.node)

    def take_token(self) -> bool:
        now = self.loop.time()
        self.tokens = min(
            float(MAX_PACKETS_PER_SECOND),
            self.tokens + (now - self.refilled) * MAX_PACKETS_PER_SECOND,
        )
        self.refilled = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def dropped(self, drop: Drop, addr: tuple[Any, int]) -> None:
        reason = drop.reason
        self.ctx.count(f"gossip_dropped_{reason}")
        self.ctx.emit("gossip.dropped", {"count": 1.0}, reason=str(reason))
        level = logging.INFO if reason in _QUIET else logging.WARNING
        self.problem(
            f"drop {reason}",
            "dropped a gossip packet from %s: %s (%s)",
            format_address(addr[0], addr[1]),
            reason,
            drop.detail,
            level=level,
        )

    def problem(self, key: str, message: str, *args: Any, level: int = logging.WARNING) -> None:
        """Log at most once per LOG_INTERVAL per ``key``, with how many were not logged."""
        self.reported.log(self.log, level, key, message, *args)

    # -- linking ----------------------------------------------------------------

    def link(self, node: NodeName) -> None:
        ident = node.identity
        if ident in self.dialling:
            return
        retry = self.retry.get(ident)
        if retry is not None and self.loop.time() < retry[0]:
            return
        if len(self.dialling) >= MAX_DIALS:
            self.ctx.count("gossip_links_deferred")
            return
        self.dialling.add(ident)
        self.tasks.spawn(self._link(node), name=f"gossip link {ident}")

    async def _link(self, node: NodeName) -> None:
        ident = node.identity
        try:
            linked = (await self.ctx.connect([node])).get(ident, False)
        finally:
            self.dialling.discard(ident)
        if linked:
            self.retry.pop(ident, None)
            return
        self.ctx.count("gossip_link_failures")
        retry = self.retry.get(ident)
        backoff = (
            retry[1]
            if retry is not None
            else Backoff(min(self.strategy.interval, MAX_RETRY_DELAY), MAX_RETRY_DELAY)
        )
        self.retry[ident] = (self.loop.time() + backoff.next(), backoff)

    def forget_old_retries(self) -> None:
        now = self.loop.time()
        for ident in [i for i, (until, _) in self.retry.items() if now - until > MAX_RETRY_DELAY]:
            del self.retry[ident]


def _now_ms() -> int:
    return int(time.time() * 1000)
