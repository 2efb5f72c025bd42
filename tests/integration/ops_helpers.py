"""Clients of the operations endpoint for the tests: plain HTTP requests and a
server-sent events reader, over loopback sockets with deadlines."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any

WITHIN = 10.0


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def raw(address: str, data: bytes, timeout: float = WITHIN) -> bytes:
    """Send ``data`` and read the answer until the server closes."""
    with socket.create_connection(split_address(address), timeout=timeout) as sock:
        sock.sendall(data)
        chunks: list[bytes] = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def parse_reply(data: bytes) -> Reply:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return Reply(status, headers, body)


def get(address: str, path: str, method: str = "GET") -> Reply:
    request = f"{method} {path} HTTP/1.1\r\nHost: {address}\r\n\r\n"
    return parse_reply(raw(address, request.encode()))


class EventStream:
    """A client of ``/events``: ``next(kind)`` waits for the next event of a kind."""

    def __init__(self, address: str) -> None:
        self.sock = socket.create_connection(split_address(address), timeout=WITHIN)
        self.sock.sendall(f"GET /events HTTP/1.1\r\nHost: {address}\r\n\r\n".encode())
        self._buffer = b""
        head = self._read_until(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])
        self.head = head.decode("latin-1")

    def _read_until(self, marker: bytes, timeout: float = WITHIN) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {marker!r} from /events within {timeout} s")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the /events stream ended")
            self._buffer += chunk
        block, _, self._buffer = self._buffer.partition(marker)
        return block

    def next(self, kind: str | None = None, timeout: float = WITHIN) -> tuple[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            block = self._read_until(b"\n\n", max(0.0, deadline - time.monotonic()))
            event, data = "message", []
            for line in block.decode().split("\n"):
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
            if data and (kind is None or event == kind):
                return event, json.loads("\n".join(data))

    def close(self) -> None:
        self.sock.close()
