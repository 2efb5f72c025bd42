"""The operations HTTP endpoint, served on the node's own event loop.

Because it shares the node's thread, it keeps answering while the application
blocks its own loop, and it reads the node's state without locks.

Routes (GET or HEAD): ``/`` (live page), ``/page.js``, ``/health``, ``/ready``,
``/status``, ``/metrics``, ``/events`` (server-sent events).

Bad input: the request head is parsed by :mod:`skycluster.ops.http11` with strict
limits; a request must arrive within ``request_timeout``; at most
``max_connections`` connections at once and ``max_streams`` ``/events``
streams; a stream whose client stops reading is dropped as soon as more than
``max_stream_buffer`` bytes wait for it, so it holds no memory.

DNS rebinding: on a loopback address the endpoint answers only requests whose
``Host`` is ``localhost`` or an IP address. A web page whose own name was made to
resolve to 127.0.0.1 sends its name as ``Host``, so it cannot read ``/status``
through the browser of someone running a node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from skycluster._tasks import TaskSet
from skycluster.events import AsyncSubscription, EventBus, event_record
from skycluster.names import format_address, is_ip, is_loopback
from skycluster.ops.http11 import HttpError, Request, RequestParser, response
from skycluster.ops.status import node_status

if TYPE_CHECKING:
    from skycluster.distribution.node import Node
    from skycluster.ops.metrics import Metrics

log = logging.getLogger("skycluster.http")

JSON = "application/json"
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"
)


@dataclass(frozen=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 0
    request_timeout: float = 5.0  # the whole request head must arrive within this
    max_connections: int = 64
    max_streams: int = 16  # /events clients at once
    max_stream_buffer: int = 64 * 1024  # bytes waiting for a stream client before it is dropped
    status_every: float = 5.0  # seconds between status events on /events (also keep-alive)


class HttpServer:
    def __init__(self, node: Node, bus: EventBus, metrics: Metrics, settings: HttpSettings) -> None:
        self.node = node
        self.bus = bus
        self.metrics = metrics
        self.settings = settings
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks = TaskSet(log)
        self._writers: set[asyncio.StreamWriter] = set()
        self._streams = 0
        self._check_host = settings.host == "localhost" or is_loopback(settings.host)

    @property
    def address(self) -> str:
        return format_address(self.settings.host, self.port)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.settings.host, self.settings.port, reuse_address=True, limit=16384
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("operations endpoint on http://%s/", self.address)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._tasks.aclose()
        if self._server is not None:
            await self._server.wait_closed()

    # -- a connection ---------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= self.settings.max_connections:
            self.node.counters.add("http_refused_busy")
            writer.write(response(503, b"too many connections\n"))
            await _linger(reader, writer)
            writer.transport.close()
            return
        self._writers.add(writer)
        try:
            task = self._tasks.spawn(self._handle(reader, writer), name="http connection")
            await asyncio.wait([task])
        except RuntimeError:  # stopping
            writer.transport.abort()
        finally:
            self._writers.discard(writer)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                request = await self._read_request(reader)
            except HttpError as exc:
                self.node.counters.add(f"http_rejected_{exc.status}")
                writer.write(response(exc.status, f"{exc.detail}\n".encode()))
                await _linger(reader, writer)
                return
            if request is None:
                return
            self.node.counters.add("http_requests")
            await self._route(request, reader, writer)
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                if not writer.transport.is_closing():
                    await asyncio.wait_for(writer.drain(), 2.0)
            writer.transport.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> Request | None:
        parser = RequestParser()
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                while True:
                    data = await reader.read(4096)
                    if not data:
                        return None  # closed before a whole request
                    request = parser.feed(data)
                    if request is not None:
                        return request
        except TimeoutError:
            raise HttpError(408, "no complete request in time") from None

    async def _route(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self._check_host and not _local_host(request.headers.get("host")):
            self.node.counters.add("http_rejected_host")
            writer.write(response(403, HOST_REFUSED))
            return
        if request.method not in ("GET", "HEAD"):
            writer.write(response(405, b"GET or HEAD only\n", headers={"Allow": "GET, HEAD"}))
            return
        head = request.method == "HEAD"
        path = request.path
        if path == "/events":
            if head:
                writer.write(response(200, content_type="text/event-stream", head_only=True))
                return
            await self._events(reader, writer)
            return
        status, body, kind, extra = self._resource(path)
        writer.write(response(status, body, kind, extra, head_only=head))

    def _resource(self, path: str) -> tuple[int, bytes, str, dict[str, str]]:
        if path == "/health":
            return 200, b"ok\n", "text/plain; charset=utf-8", {}
        if path == "/ready":
            linked = len(self.node.nodes())
            wanted = self.node.settings.min_nodes
            if linked >= wanted:
                return 200, f"ready: {linked} peers linked\n".encode(), "text/plain", {}
            text = f"not ready: {linked} of {wanted} peers linked\n"
            return 503, text.encode(), "text/plain; charset=utf-8", {}
        if path == "/status":
            return 200, _json(node_status(self.node)), JSON, {}
        if path == "/metrics":
            try:
                from skycluster.ops import prometheus  # the optional extra, on first scrape

                body, kind = prometheus.exposition(self.metrics, self.node.identity)
            except ImportError:
                return 501, prometheus.INSTALL_HINT.encode(), "text/plain; charset=utf-8", {}
            return 200, body, kind, {}
        if path in ("/", "/index.html"):
            page = _asset("page.html")
            return 200, page, "text/html; charset=utf-8", {"Content-Security-Policy": PAGE_CSP}
        if path == "/page.js":
            return 200, _asset("page.js"), "text/javascript; charset=utf-8", {}
        hint = b"not found; try /status, /metrics, /health, /ready, /events or /\n"
        return 404, hint, "text/plain; charset=utf-8", {}

    # -- /events --------------------------------------------------------------

    async def _events(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._streams >= self.settings.max_streams:
            self.node.counters.add("http_events_refused")
            writer.write(response(503, b"too many event streams\n"))
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:  # a small kernel buffer: a stuck client is noticed soon
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        self._streams += 1
        subscription = AsyncSubscription(self.bus, 256, self.node.loop)
        self.bus.attach(subscription, initial=False)
        # The client sends nothing more: end of input means it left (close at once).
        watcher = asyncio.ensure_future(_until_closed(reader, subscription))
        try:
            writer.write(
                response(200, content_type="text/event-stream", length=False, head_only=True)
            )
            writer.write(b"retry: 2000\n\n")
            writer.write(_sse("status", node_status(self.node)))
            while not writer.transport.is_closing():
                try:
                    async with asyncio.timeout(self.settings.status_every):
                        event = await subscription.get()
                except TimeoutError:
                    writer.write(_sse("status", node_status(self.node)))
                except StopAsyncIteration:
                    return
                else:
                    record = event_record(event)
                    writer.write(_sse(record.pop("event"), record))
                if writer.transport.get_write_buffer_size() > self.settings.max_stream_buffer:
                    self.node.counters.add("http_events_dropped")
                    log.info("dropping an /events client that stopped reading")
                    writer.transport.abort()
                    return
        finally:
            self._streams -= 1
            subscription.close()
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)


async def _until_closed(reader: asyncio.StreamReader, subscription: AsyncSubscription) -> None:
    with contextlib.suppress(Exception):
        while await reader.read(1024):
            pass
    subscription.close()


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Refused mid-request: send our answer, then read (and drop) a bounded amount of
    what the client still sends, so that closing does not reset the connection
    before the client has read the answer."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.drain(), 1.0)
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(1.0):
            discarded = 0
            while discarded < 256 * 1024:
                data = await reader.read(65536)
                if not data:
                    break
                discarded += len(data)


HOST_REFUSED = (
    b"this endpoint listens on loopback and answers only requests for localhost or an "
    b"IP address (Host header); listen on another address to serve other names\n"
)


def _local_host(header: str | None) -> bool:
    """A Host header that names this machine: localhost or an IP address (with or
    without a port). No header at all is a tool, not a browser: allowed."""
    if header is None:
        return True
    host = header.strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else ""
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host == "localhost" or host.endswith(".localhost") or is_ip(host)


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    text = json.dumps(data, default=str, separators=(",", ":"))
    return f"event: {kind}\ndata: {text}\n\n".encode()


def _json(data: Any) -> bytes:
    return (json.dumps(data, default=str, indent=1) + "\n").encode()


_ASSETS: dict[str, bytes] = {}


def _asset(name: str) -> bytes:
    if name not in _ASSETS:
        _ASSETS[name] = resources.files("skycluster.ops").joinpath(name).read_bytes()
    return _ASSETS[name]
