"""A sans-I/O parser for the HTTP/1.1 requests of the operations endpoint.

Takes bytes, returns a :class:`Request` or raises :class:`HttpError` carrying
the status to answer. Deliberately small and strict: GET and HEAD only, no
request body, one request per connection, limits on every part. It never
allocates more than ``max_head`` bytes per connection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

MAX_HEAD = 8 * 1024  # request line plus headers
MAX_TARGET = 2 * 1024
MAX_HEADERS = 64

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VERSION = re.compile(rb"^HTTP/1\.[01]$")
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class HttpError(Exception):
    """The request is refused; answer ``status`` and close."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)
    version: str = "HTTP/1.1"
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names


class RequestParser:
    """Feed bytes until :meth:`feed` returns the request (or raises)."""

    def __init__(
        self, max_head: int = MAX_HEAD, max_target: int = MAX_TARGET, max_headers: int = MAX_HEADERS
    ) -> None:
        self.max_head = max_head
        self.max_target = max_target
        self.max_headers = max_headers
        self._buffer = bytearray()
        self._done = False

    def feed(self, data: bytes) -> Request | None:
        if self._done:
            return None  # bytes after the request (a body, pipelining) are not read
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > self.max_head:
                raise HttpError(431, f"request head larger than {self.max_head} bytes")
            return None
        if end + 4 > self.max_head:
            raise HttpError(431, f"request head larger than {self.max_head} bytes")
        head = bytes(self._buffer[:end])
        self._buffer.clear()
        self._done = True
        return self._parse(head)

    def _parse(self, head: bytes) -> Request:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            raise HttpError(400, "malformed request line")
        method, target, version = parts
        if not _TOKEN.match(method):
            raise HttpError(400, "malformed method")
        if not _VERSION.match(version):
            raise HttpError(505 if version.startswith(b"HTTP/") else 400, "HTTP/1.0 or 1.1 only")
        if len(target) > self.max_target:
            raise HttpError(414, f"request target longer than {self.max_target} bytes")
        if not target.startswith(b"/") or any(b < 0x21 or b > 0x7E for b in target):
            raise HttpError(400, "malformed request target")
        headers: dict[str, str] = {}
        if len(lines) - 1 > self.max_headers:
            raise HttpError(431, f"more than {self.max_headers} header fields")
        for line in lines[1:]:
            if not line or line[:1] in (b" ", b"\t"):
                raise HttpError(400, "malformed header field (folding is not allowed)")
            name, sep, value = line.partition(b":")
            if not sep or not _TOKEN.match(name):
                raise HttpError(400, "malformed header field")
            if any((b < 0x20 and b != 0x09) or b == 0x7F for b in value):
                raise HttpError(400, "control characters in a header value")
            key = name.decode("ascii").lower()
            text = value.strip(b" \t").decode("latin-1")
            if key in headers and key in ("content-length", "host", "transfer-encoding"):
                raise HttpError(400, f"repeated {key} header")
            headers[key] = text
        if "transfer-encoding" in headers:
            raise HttpError(413, "no request body is accepted")
        length = headers.get("content-length")
        if length is not None:
            if not (length.isascii() and length.isdigit()):
                raise HttpError(400, "malformed content-length")
            if int(length) > 0:
                raise HttpError(413, "no request body is accepted")
        text_target = target.decode("ascii")
        split = urlsplit(text_target)
        try:
            query = parse_qs(split.query, max_num_fields=16)
        except ValueError:
            raise HttpError(400, "too many query fields") from None
        return Request(
            method=method.decode("ascii"),
            target=text_target,
            path=unquote(split.path),
            query=query,
            version=version.decode("ascii"),
            headers=headers,
        )


def response(
    status: int,
    body: bytes = b"",
    content_type: str = "text/plain; charset=utf-8",
    headers: dict[str, str] | None = None,
    *,
    head_only: bool = False,
    length: bool = True,
) -> bytes:
    """A complete response (``length=False`` for a stream: no Content-Length)."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    fields = {
        "Content-Type": content_type,
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Connection": "close",
        **(headers or {}),
    }
    if length:
        fields["Content-Length"] = str(len(body))
    lines += [f"{k}: {v}" for k, v in fields.items()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body
