"""The EPMD-compatible port mapper: an asyncio server and client coroutines.

Both sides only move bytes; the wire format lives in :mod:`skycluster.distribution.epmd_protocol`.
The server speaks to Erlang's ``erl`` and ``epmd -names`` as the real ``epmd`` does, and the
client talks to either. Limits and byte layouts: ``docs/portmapper.md``.

Example::

    async with PortMapperServer(PortMapperSettings(port=0)) as server:
        async with await register("api", 9100, epmd_port=server.port):
            assert await lookup("127.0.0.1", "api", epmd_port=server.port) == 9100
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import random
import socket
from collections import OrderedDict
from collections.abc import Mapping
from types import TracebackType

from skycluster.distribution.epmd_protocol import (
    EPMD_DEFAULT_PORT,
    HIGHEST_VERSION,
    LOWEST_VERSION,
    MAX_EXTRA_BYTES,
    MAX_NAME_BYTES,
    NODE_TYPE_HIDDEN,
    NODE_TYPE_NORMAL,
    PROTOCOL_TCP_IPV4,
    Alive2Request,
    Alive2Response,
    NamesRequest,
    PortPlease2Request,
    ProtocolError,
    RegisteredNode,
    Request,
    RequestParser,
    alive2_response_size,
    decode_alive2_response,
    decode_names_response,
    decode_port2_response,
    encode_alive2_response,
    encode_names_response,
    encode_port2_response,
    encode_request,
)
from skycluster.distribution.settings import PortMapperSettings
from skycluster.names import is_ip

__all__ = [
    "DEFAULT_TIMEOUT",
    "EPMD_DEFAULT_PORT",
    "ERL_PORT_ENV",
    "PORT_ENV",
    "NameTaken",
    "PortMapperError",
    "PortMapperServer",
    "PortMapperSettings",
    "PortMapperUnavailable",
    "Registration",
    "epmd_port_from_env",
    "lookup",
    "lookup_node",
    "names",
    "register",
]

log = logging.getLogger("skycluster.portmapper")

PORT_ENV = "SKYCLUSTER_EPMD_PORT"
ERL_PORT_ENV = "ERL_EPMD_PORT"  # what erl and epmd read
DEFAULT_TIMEOUT = 5.0  # seconds a client waits for connect + reply

_MAX_PORT2_REPLY = 14 + MAX_NAME_BYTES + MAX_EXTRA_BYTES
_MAX_NAMES_REPLY = 16 * 1024 * 1024
_RECV_SIZE = 4096
_ACCEPT_RETRY = 0.1  # seconds to back off when accept() fails (e.g. out of file descriptors)
# Like epmd, remember the last creation of this many unregistered names, so that a node that
# comes back under the same name gets a different creation.
_REMEMBERED_CREATIONS = 1000
_CREATION_FAILED = 99  # what epmd puts in a refused ALIVE2 reply


class PortMapperError(Exception):
    """The port mapper refused a request or answered with bytes that are not EPMD protocol."""


class PortMapperUnavailable(PortMapperError):
    """No port mapper answered: nothing listens at the address, or it did not reply in time."""


class NameTaken(PortMapperError):
    """The name is already registered by a live node."""


def epmd_port_from_env(environ: Mapping[str, str] | None = None) -> int:
    """The port mapper port: ``SKYCLUSTER_EPMD_PORT``, else ``ERL_EPMD_PORT``, else 4369.

    An empty variable counts as unset. ``environ`` defaults to ``os.environ``.
    """
    env = os.environ if environ is None else environ
    for var in (PORT_ENV, ERL_PORT_ENV):
        raw = env.get(var, "")
        if not raw.strip():
            continue
        text = raw.strip()
        if text.isascii() and text.isdigit() and 1 <= int(text) <= 0xFFFF:
            return int(text)
        raise ValueError(
            f"{var}={raw!r} is not a port; use a decimal integer from 1 to 65535, "
            f"e.g. {var}={EPMD_DEFAULT_PORT}"
        )
    return EPMD_DEFAULT_PORT


# --- server ---------------------------------------------------------------------------------


class _Registry:
    """The live registrations and the creation counters of recently unregistered names."""

    def __init__(self) -> None:
        self._live: dict[str, tuple[RegisteredNode, int]] = {}
        self._past: OrderedDict[str, int] = OrderedDict()

    def nodes(self) -> list[RegisteredNode]:
        return [node for node, _ in self._live.values()]

    def lookup(self, name: str) -> RegisteredNode | None:
        entry = self._live.get(name)
        return None if entry is None else entry[0]

    def register(self, node: RegisteredNode) -> int | None:
        """The creation of the new registration, or None when the name is taken."""
        if node.name in self._live:
            return None
        counter = self._past.pop(node.name, None)
        if counter is None:
            # epmd starts from the clock; a random start also differs across restarts.
            counter = random.randrange(4, 1 << 32)
        else:
            counter = counter + 1 if counter < (1 << 32) - 1 else 4
        self._live[node.name] = (node, counter)
        # Creations 1..3 belong to version-5 nodes and 0 means "any": 32-bit ones start at 4.
        return counter if node.highest_version >= 6 else counter % 3 + 1

    def unregister(self, name: str) -> None:
        _, counter = self._live.pop(name)
        self._past[name] = counter
        if len(self._past) > _REMEMBERED_CREATIONS:
            self._past.popitem(last=False)


def _format_address(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


def _is_local_peer(sock: socket.socket, peer: object) -> bool:
    """Whether the peer is on this host (loopback or our own address): epmd's rule for ALIVE2."""
    if not isinstance(peer, tuple):
        return False  # not an IP connection
    try:
        peer_ip = ipaddress.ip_address(peer[0])
        local_ip = ipaddress.ip_address(sock.getsockname()[0])
    except (ValueError, OSError):
        return False
    if isinstance(peer_ip, ipaddress.IPv6Address) and peer_ip.ipv4_mapped is not None:
        peer_ip = peer_ip.ipv4_mapped
    if isinstance(local_ip, ipaddress.IPv6Address) and local_ip.ipv4_mapped is not None:
        local_ip = local_ip.ipv4_mapped
    return peer_ip.is_loopback or peer_ip == local_ip


class PortMapperServer:
    """An EPMD-compatible port mapper.

    Serves ALIVE2_REQ (a registration lives exactly as long as the connection that made it,
    one per connection), PORT_PLEASE2_REQ and NAMES_REQ, one request per connection as epmd.
    A connection that sends malformed bytes, or no complete request within
    ``request_timeout``, is closed and logged once on ``skycluster.portmapper``.
    """

    def __init__(self, settings: PortMapperSettings | None = None) -> None:
        self._settings = settings or PortMapperSettings()
        self._registry = _Registry()
        self._listener: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._connections = 0
        self._refusing = False

    @property
    def settings(self) -> PortMapperSettings:
        return self._settings

    @property
    def port(self) -> int:
        """The port the server listens on (useful with port 0)."""
        if self._listener is None:
            raise RuntimeError("PortMapperServer.port: the server is not started")
        port: int = self._listener.getsockname()[1]
        return port

    @property
    def registrations(self) -> list[RegisteredNode]:
        """The live registrations."""
        return self._registry.nodes()

    @property
    def connections(self) -> int:
        """Open client connections, registrations included."""
        return self._connections

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        """Listen on ``host``:``port`` (defaults from the settings; a bind of "" is every
        address) and serve in the background."""
        if self._task is not None:
            raise RuntimeError("PortMapperServer.start: the server is already started")
        host = (self._settings.bind or "0.0.0.0") if host is None else host
        port = self._settings.port if port is None else port
        self._listener = await _listen(host, port)
        self._task = asyncio.create_task(
            self._accept_loop(self._listener), name=f"portmapper accept {host}:{port}"
        )
        log.info("port mapper listening on %s", _format_address(self._listener.getsockname()))

    async def stop(self) -> None:
        """Close the listener and every connection (ending all registrations). Idempotent."""
        task, self._task = self._task, None
        listener, self._listener = self._listener, None
        try:
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise  # stop() itself is being cancelled
        finally:
            if listener is not None:
                listener.close()

    async def __aenter__(self) -> PortMapperServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        # The task group owns every connection task: cancelling this loop cancels and awaits
        # them all, and each closes its socket on the way out.
        async with asyncio.TaskGroup() as connections:
            while True:
                try:
                    sock, peer = await loop.sock_accept(listener)
                except ConnectionAbortedError:
                    continue
                except OSError as exc:
                    log.error(
                        "port mapper cannot accept connections: %s; retrying in %s s",
                        exc,
                        _ACCEPT_RETRY,
                    )
                    await asyncio.sleep(_ACCEPT_RETRY)
                    continue
                if self._connections >= self._settings.max_connections:
                    sock.close()
                    if not self._refusing:
                        log.warning(
                            "port mapper has max_connections=%d open connections; closing new "
                            "ones (first: %s) until some end",
                            self._settings.max_connections,
                            _format_address(peer),
                        )
                        self._refusing = True
                    continue
                self._refusing = False
                self._connections += 1
                connections.create_task(self._serve(sock, peer))

    async def _serve(self, sock: socket.socket, peer: object) -> None:
        loop = asyncio.get_running_loop()
        where = _format_address(peer)
        registered: str | None = None
        timeout = self._settings.request_timeout
        try:
            async with asyncio.timeout(timeout) as deadline:
                request = await _read_request(loop, sock)
                if request is None:
                    return  # closed without sending anything: nothing to log
                if isinstance(request, Alive2Request):
                    if not _is_local_peer(sock, peer):
                        # epmd ignores registrations from other hosts and closes.
                        log.warning("%s: refused ALIVE2_REQ from a non-local address", where)
                        return
                    reply, registered = self._register(request.node, where)
                elif isinstance(request, PortPlease2Request):
                    reply = encode_port2_response(self._registry.lookup(request.name))
                else:
                    reply = encode_names_response(
                        self._bound_port(sock), [(n.name, n.port) for n in self._registry.nodes()]
                    )
                await loop.sock_sendall(sock, reply)
            # A registration lives until its connection closes. A registered node sends nothing
            # more; any byte ends the registration, as in epmd.
            if registered is not None and await loop.sock_recv(sock, 1):
                log.warning(
                    "%s: sent more bytes after registering %r (one registration per "
                    "connection); ending the registration",
                    where,
                    registered,
                )
        except ProtocolError as exc:
            log.warning("%s: closing connection: %s", where, exc)
        except TimeoutError as exc:
            if deadline.expired():
                log.info("%s: closing connection: no complete request within %s s", where, timeout)
            else:  # a socket-level timeout, not ours
                log.debug("%s: connection failed: %s", where, exc)
        except OSError as exc:
            log.debug("%s: connection failed: %s", where, exc)
        except Exception:
            log.exception("%s: unexpected error while serving the connection", where)
        finally:
            if registered is not None:
                self._registry.unregister(registered)
                log.info("%s: unregistered %r", where, registered)
            sock.close()
            self._connections -= 1

    def _register(self, node: RegisteredNode, where: str) -> tuple[bytes, str | None]:
        extended = node.highest_version >= 6  # epmd's rule for ALIVE2_X_RESP
        creation = self._registry.register(node)
        if creation is None:
            log.info("%s: refused ALIVE2_REQ: the name %r is already registered", where, node.name)
            return encode_alive2_response(Alive2Response(1, _CREATION_FAILED, extended)), None
        log.info(
            "%s: registered %r at port %d (creation %d)", where, node.name, node.port, creation
        )
        return encode_alive2_response(Alive2Response(0, creation, extended)), node.name

    def _bound_port(self, sock: socket.socket) -> int:
        port: int = sock.getsockname()[1]
        return port


async def _read_request(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> Request | None:
    """The one request of a connection; None if it closed before sending a byte."""
    parser = RequestParser()
    while True:
        data = await loop.sock_recv(sock, _RECV_SIZE)
        if not data:
            parser.eof()
            return None
        requests = parser.feed(data)
        if requests:
            if len(requests) > 1 or parser.buffered:
                raise ProtocolError(
                    "more than one request on one connection; the port mapper serves one "
                    "(and keeps at most one registration) per connection"
                )
            return requests[0]


async def _listen(host: str, port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    where = _format_address((host, port))
    try:
        if is_ip(host):  # nothing to look up: no executor thread
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        else:
            infos = await loop.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
    except OSError as exc:
        raise OSError(
            exc.errno, f"port mapper cannot resolve bind address {host!r}: {exc}"
        ) from exc
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        hint = (
            " (another port mapper, e.g. epmd, may already listen there; use it, stop it with "
            "`epmd -kill`, or choose another port)"
            if exc.errno == errno.EADDRINUSE
            else ""
        )
        raise OSError(
            exc.errno, f"port mapper cannot listen on {where}: {exc.strerror}{hint}"
        ) from exc
    return sock


# --- client ---------------------------------------------------------------------------------


def _where(host: str, port: int) -> str:
    return _format_address((host, port))


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.open_connection(host, port)
    except OSError as exc:
        raise PortMapperUnavailable(
            f"no port mapper at {_where(host, port)}: {exc.strerror or exc}; start one "
            f"(`epmd -daemon`, or skycluster's PortMapperServer) or set {PORT_ENV} to the port "
            "it listens on"
        ) from exc


async def _exchange(host: str, port: int, request: Request, time_limit: float, limit: int) -> bytes:
    """Send one request and read the reply up to the port mapper's close."""
    what = type(request).__name__
    where = _where(host, port)
    try:
        async with asyncio.timeout(time_limit):
            reader, writer = await _connect(host, port)
            try:
                writer.write(encode_request(request))
                await writer.drain()
                reply = bytearray()
                while chunk := await reader.read(_RECV_SIZE):
                    reply += chunk
                    if len(reply) > limit:
                        raise PortMapperError(
                            f"port mapper at {where} sent more than {limit} bytes in reply "
                            f"to {what}"
                        )
            finally:
                await _close_writer(writer)
    except TimeoutError:
        raise PortMapperUnavailable(
            f"port mapper at {where} did not answer {what} within {time_limit} s"
        ) from None
    except OSError as exc:
        raise PortMapperError(f"connection to the port mapper at {where} failed: {exc}") from exc
    if not reply:
        raise PortMapperError(
            f"port mapper at {where} closed the connection without answering {what} "
            "(it closes new connections when it has too many)"
        )
    return bytes(reply)


async def lookup_node(
    host: str,
    name: str,
    *,
    epmd_port: int = EPMD_DEFAULT_PORT,
    timeout: float = DEFAULT_TIMEOUT,
) -> RegisteredNode | None:
    """The registration of ``name`` at the port mapper on ``host``, or None if not registered."""
    request = PortPlease2Request(name)  # ValueError for a bad name, before any I/O
    reply = await _exchange(host, epmd_port, request, timeout, _MAX_PORT2_REPLY)
    try:
        return decode_port2_response(reply)
    except ProtocolError as exc:
        raise PortMapperError(
            f"port mapper at {_where(host, epmd_port)} sent an invalid PORT2_RESP: {exc}"
        ) from exc


async def lookup(
    host: str,
    name: str,
    *,
    epmd_port: int = EPMD_DEFAULT_PORT,
    timeout: float = DEFAULT_TIMEOUT,
) -> int | None:
    """The distribution port of node ``name`` on ``host``, or None if it is not registered."""
    node = await lookup_node(host, name, epmd_port=epmd_port, timeout=timeout)
    return None if node is None else node.port


async def names(
    host: str,
    *,
    epmd_port: int = EPMD_DEFAULT_PORT,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[tuple[str, int]]:
    """The (name, port) of every node registered with the port mapper on ``host``."""
    reply = await _exchange(host, epmd_port, NamesRequest(), timeout, _MAX_NAMES_REPLY)
    try:
        return list(decode_names_response(reply).names)
    except ProtocolError as exc:
        raise PortMapperError(
            f"port mapper at {_where(host, epmd_port)} sent an invalid NAMES reply: {exc}"
        ) from exc


class Registration:
    """A name registered with a port mapper; it stays registered while this is open.

    The port mapper drops the registration when this connection closes: call :meth:`close`
    (or use ``async with``) when the node stops being reachable.
    """

    def __init__(
        self,
        node: RegisteredNode,
        creation: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        where: str,
    ) -> None:
        self.node = node
        self.creation = creation  # the port mapper's number for this incarnation of the name
        self.where = where  # the port mapper's address
        self._reader = reader
        self._writer = writer

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def port(self) -> int:
        return self.node.port

    @property
    def closed(self) -> bool:
        return self._writer.is_closing()

    async def close(self) -> None:
        """End the registration. Idempotent."""
        await _close_writer(self._writer)

    async def wait_lost(self) -> None:
        """Return when the port mapper ends the registration (it closed or died)."""
        with contextlib.suppress(OSError):
            while await self._reader.read(256):
                pass  # a port mapper sends nothing more after ALIVE2; ignore stray bytes

    async def __aenter__(self) -> Registration:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (
            f"<Registration {self.name!r} port={self.port} creation={self.creation} "
            f"at {self.where} {state}>"
        )


async def register(
    name: str,
    port: int,
    *,
    host: str = "127.0.0.1",
    epmd_port: int = EPMD_DEFAULT_PORT,
    hidden: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    versions: tuple[int, int] = (HIGHEST_VERSION, LOWEST_VERSION),
    extra: bytes = b"",
) -> Registration:
    """Register ``name`` at distribution ``port`` with the port mapper on ``host``;
    ``versions`` (highest, lowest) are the distribution versions the node speaks and
    ``extra`` the registration's extra field (a skycluster node's is ``SKYCLUSTER_EXTRA``).

    epmd only accepts registrations from its own host. Raises :class:`NameTaken` if a live
    node holds the name, :class:`PortMapperUnavailable` if no port mapper answers.
    """
    if not 1 <= port <= 0xFFFF:
        raise ValueError(f"port={port!r}: use the node's listen port, 1 to 65535")
    node_type = NODE_TYPE_HIDDEN if hidden else NODE_TYPE_NORMAL
    node = RegisteredNode(name, port, node_type, PROTOCOL_TCP_IPV4, *versions, extra)
    where = _where(host, epmd_port)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await _connect(host, epmd_port)
            try:
                writer.write(encode_request(Alive2Request(node)))
                await writer.drain()
                head = await reader.readexactly(1)
                rest = await reader.readexactly(alive2_response_size(head[0]) - 1)
                response = decode_alive2_response(head + rest)
            except BaseException:
                await _close_writer(writer)
                raise
    except TimeoutError:
        raise PortMapperUnavailable(
            f"port mapper at {where} did not answer the registration of {name!r} within {timeout} s"
        ) from None
    except asyncio.IncompleteReadError:
        raise PortMapperError(
            f"port mapper at {where} closed the connection without answering the registration "
            f"of {name!r} (epmd does so for registrations from another host, and a port mapper "
            "at its connection limit closes new connections)"
        ) from None
    except ProtocolError as exc:
        raise PortMapperError(
            f"port mapper at {where} sent an invalid ALIVE2 reply: {exc}"
        ) from exc
    except OSError as exc:
        raise PortMapperError(f"connection to the port mapper at {where} failed: {exc}") from exc
    if not response.ok:
        await _close_writer(writer)
        raise NameTaken(
            f"the port mapper at {where} refused the name {name!r} (result {response.result}): "
            "a live node already holds it; stop that node or choose another name"
        )
    return Registration(node, response.creation, reader, writer, where)
