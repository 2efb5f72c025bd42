"""A minimal HTTP/1.1 client over asyncio streams: one GET per connection
(``Connection: close``), bodies by Content-Length, chunked or until close,
every read bounded in size and time. Enough for the Kubernetes API's list and
watch, and small enough to read in one sitting; no dependency."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024  # status line and headers
MAX_CHUNK_LINE = 1024


class HttpError(Exception):
    """The server could not be reached or spoke something that is not HTTP/1.1."""


class StreamCut(HttpError):
    """The body ended before its announced end (a dropped connection)."""


class TooLarge(HttpError):
    """A body or a line exceeded its limit."""


@dataclass(frozen=True, slots=True)
class Server:
    scheme: str  # http or https
    host: str  # no brackets
    port: int

    @classmethod
    def parse(cls, text: str) -> Server:
        """``https://host:port``, ``http://host:port`` or ``host[:port]`` (https)."""
        raw = text.strip()
        if "://" not in raw:
            raw = "https://" + raw
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected https://HOST[:PORT] (or http:// for a local proxy)")
        if parts.path not in ("", "/") or parts.query:
            raise ValueError("expected https://HOST[:PORT] without a path")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("expected a port number from 1 to 65535") from None
        default = 443 if parts.scheme == "https" else 80
        return cls(parts.scheme, parts.hostname, port or default)

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}"


class Response:
    """Status and headers of a response whose body is still to be read."""

    def __init__(
        self,
        status: int,
        reason: str,
        headers: dict[str, str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers  # lower-case names
        self._reader = reader
        self._writer = writer

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    async def body(self, limit: int, timeout: float) -> bytes:
        """The whole body, at most ``limit`` bytes, within ``timeout`` seconds."""
        parts: list[bytes] = []
        size = 0
        async with asyncio.timeout(timeout):
            async for chunk in self._chunks():
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"response body larger than {limit} bytes")
                parts.append(chunk)
        return b"".join(parts)

    async def lines(self, max_line: int, idle_timeout: float) -> AsyncIterator[bytes]:
        """The body split at newlines (a watch stream: one JSON object a line); a
        silence longer than ``idle_timeout`` ends it with TimeoutError."""
        pending = b""
        chunks = self._chunks().__aiter__()
        while True:
            try:
                async with asyncio.timeout(idle_timeout):
                    chunk = await chunks.__anext__()
            except StopAsyncIteration:
                break
            pending += chunk
            while True:
                line, newline, rest = pending.partition(b"\n")
                if not newline:
                    break
                pending = rest
                if line.strip():
                    yield line
            if len(pending) > max_line:
                raise TooLarge(f"a line longer than {max_line} bytes")
        if pending.strip():
            yield pending

    async def _chunks(self) -> AsyncIterator[bytes]:
        reader = self._reader
        encoding = self.headers.get("transfer-encoding", "").lower()
        try:
            if "chunked" in encoding:
                while True:
                    line = await reader.readuntil(b"\n")
                    if len(line) > MAX_CHUNK_LINE:
                        raise HttpError("chunk size line too long")
                    try:
                        size = int(line.split(b";", 1)[0].strip(), 16)
                    except ValueError:
                        raise HttpError(f"bad chunk size line {line[:40]!r}") from None
                    if size < 0:
                        raise HttpError("negative chunk size")
                    if size == 0:
                        with contextlib.suppress(asyncio.IncompleteReadError):
                            await reader.readuntil(b"\n")  # trailer end (trailers unsupported)
                        return
                    remaining = size
                    while remaining:
                        data = await reader.read(min(remaining, 65536))
                        if not data:
                            raise StreamCut("connection closed inside a chunk")
                        remaining -= len(data)
                        yield data
                    await reader.readexactly(2)
            elif "content-length" in self.headers:
                try:
                    remaining = int(self.headers["content-length"])
                except ValueError:
                    raise HttpError("bad Content-Length") from None
                while remaining > 0:
                    data = await reader.read(min(remaining, 65536))
                    if not data:
                        raise StreamCut("connection closed before Content-Length bytes")
                    remaining -= len(data)
                    yield data
            else:
                while data := await reader.read(65536):
                    yield data
        except asyncio.IncompleteReadError:
            raise StreamCut("connection closed inside the body") from None
        except asyncio.LimitOverrunError:
            raise HttpError("chunk size line too long") from None

    async def close(self) -> None:
        """Drop the connection (one request per connection: nothing to shut down
        politely, and a TLS close would wait for a peer that may be busy)."""
        self._writer.transport.abort()
        with contextlib.suppress(OSError, ssl.SSLError):
            await self._writer.wait_closed()


async def get(
    server: Server,
    target: str,
    headers: Mapping[str, str],
    *,
    ssl_context: ssl.SSLContext | None,
    timeout: float,
) -> Response:
    """Send ``GET target`` and read the status and headers within ``timeout``.
    The caller reads the body and closes the response."""
    async with asyncio.timeout(timeout):
        try:
            reader, writer = await asyncio.open_connection(
                server.host,
                server.port,
                ssl=ssl_context if server.scheme == "https" else None,
                server_hostname=server.host if server.scheme == "https" else None,
                limit=MAX_HEAD,
            )
        except ssl.SSLCertVerificationError as exc:
            raise HttpError(f"TLS verification of {server} failed: {exc.verify_message}") from None
        except ssl.SSLError as exc:
            raise HttpError(f"TLS with {server} failed: {exc.reason or exc}") from None
        except OSError as exc:
            raise HttpError(f"cannot connect to {server}: {exc.strerror or exc}") from None
        try:
            lines = [
                f"GET {target} HTTP/1.1",
                f"Host: {server.authority}",
                "Connection: close",
                "User-Agent: skycluster",
                *(f"{k}: {v}" for k, v in headers.items()),
            ]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status, reason, parsed = _parse_head(head)
        except BaseException as exc:
            writer.close()
            if isinstance(exc, asyncio.LimitOverrunError):
                raise HttpError(f"response head larger than {MAX_HEAD} bytes") from None
            if isinstance(exc, asyncio.IncompleteReadError):
                raise HttpError(f"{server} closed the connection before answering") from None
            if isinstance(exc, ssl.SSLError):
                raise HttpError(f"TLS with {server} failed: {exc.reason or exc}") from None
            if isinstance(exc, OSError):
                raise HttpError(f"connection to {server} failed: {exc.strerror or exc}") from None
            raise
    return Response(status, reason, parsed, reader, writer)


def _parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    text = head.decode("latin-1")
    status_line, *header_lines = text.split("\r\n")
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not (code.isascii() and code.isdigit()):
        raise HttpError(f"not an HTTP/1.1 response: {status_line[:60]!r}")
    headers: dict[str, str] = {}
    for line in header_lines:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(f"bad header line {line[:60]!r}")
        headers[name.strip().lower()] = value.strip()
    return int(code), reason.strip(), headers
