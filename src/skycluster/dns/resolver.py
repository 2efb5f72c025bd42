"""A small asyncio stub resolver: one question to one server over UDP, again
over TCP when the answer is truncated. The server is the one given
(``HOST[:PORT]``) or the first ``nameserver`` of ``/etc/resolv.conf``."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path

from skycluster.dns import codec
from skycluster.names import parse_address

MAX_TCP_MESSAGE = 65535


class DnsError(Exception):
    """No usable answer; ``kind`` is what the strategies count."""

    kind = "dns_error"


class NameNotFound(DnsError):
    kind = "nxdomain"


class DnsTimeout(DnsError):
    kind = "timeout"


class BadAnswer(DnsError):
    kind = "bad_answer"


def parse_server(text: str) -> tuple[str, int]:
    """``HOST[:PORT]`` or ``[V6]:PORT``; the port defaults to 53."""
    text = text.strip()
    if text.count(":") > 1 and not text.startswith("["):
        return text, 53  # a bare IPv6 address
    return parse_address(text, default_port=53)


def system_server(path: str = "/etc/resolv.conf") -> tuple[str, int]:
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            return parts[1].split("%", 1)[0], 53
    return "127.0.0.1", 53


@dataclass(frozen=True, slots=True)
class SrvAnswer:
    records: list[codec.Srv]
    addresses: dict[str, list[str]]  # target -> addresses of the additional section


class _Datagram(asyncio.DatagramProtocol):
    def __init__(self, query_id: int, question: tuple[str, int]) -> None:
        self.query_id = query_id
        self.question = question
        self.answer: asyncio.Future[codec.Message] = asyncio.get_running_loop().create_future()
        self.garbage = 0

    def datagram_received(self, data: bytes, addr: object) -> None:
        try:
            message = codec.parse_message(data)
        except codec.FormatError as exc:
            self.garbage += 1
            if (
                not self.answer.done()
                and len(data) >= 2
                and data[:2] == self.query_id.to_bytes(2, "big")
            ):
                self.answer.set_exception(BadAnswer(f"malformed answer: {exc}"))
            return
        if (
            self.answer.done()
            or message.id != self.query_id
            or not message.is_response
            or [(n.lower(), t) for n, t in message.questions]
            != [(self.question[0].lower(), self.question[1])]
        ):
            self.garbage += 1  # stale, spoofed or someone else's: keep waiting
            return
        self.answer.set_result(message)

    server = ""

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            why = getattr(exc, "strerror", None) or exc
            self.answer.set_exception(DnsError(f"cannot reach {self.server}: {why}"))


class Resolver:
    def __init__(
        self, server: str | None = None, *, timeout: float = 2.0, attempts: int = 2
    ) -> None:
        self.server = parse_server(server) if server else system_server()
        self.timeout = timeout
        self.attempts = attempts

    def __str__(self) -> str:
        host, port = self.server
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def query(self, name: str, qtype: int) -> codec.Message:
        """The answer to one question; NXDOMAIN raises NameNotFound, other
        failures DnsError subclasses."""
        name = name.rstrip(".")
        try:
            codec.encode_name(name)
        except ValueError as exc:
            raise BadAnswer(str(exc)) from None
        message: codec.Message | None = None
        for _attempt in range(self.attempts):
            try:
                message = await self._udp(name, qtype)
                break
            except DnsTimeout:
                continue
        if message is None:
            raise DnsTimeout(
                f"no answer from {self} for {codec.TYPE_NAMES.get(qtype, qtype)} {name} "
                f"within {self.attempts} x {self.timeout} s"
            )
        if message.truncated:
            message = await self._tcp(name, qtype)
        if message.rcode == codec.NXDOMAIN:
            raise NameNotFound(f"{name} does not exist (NXDOMAIN from {self})")
        if message.rcode != codec.NOERROR:
            code = codec.RCODE_NAMES.get(message.rcode, str(message.rcode))
            raise DnsError(f"{self} answered {code} for {name}")
        return message

    async def _udp(self, name: str, qtype: int) -> codec.Message:
        query_id = secrets.randbelow(65536)
        loop = asyncio.get_running_loop()
        host, port = self.server

        def protocol_factory() -> _Datagram:
            protocol = _Datagram(query_id, (name, qtype))
            protocol.server = str(self)
            return protocol

        try:
            transport, protocol = await loop.create_datagram_endpoint(
                protocol_factory, remote_addr=(host, port)
            )
        except OSError as exc:
            raise DnsError(f"cannot reach {self}: {exc.strerror or exc}") from None
        try:
            transport.sendto(codec.build_query(query_id, name, qtype))
            async with asyncio.timeout(self.timeout):
                return await protocol.answer
        except TimeoutError:
            raise DnsTimeout(f"no answer from {self}") from None
        finally:
            transport.close()

    async def _tcp(self, name: str, qtype: int) -> codec.Message:
        query_id = secrets.randbelow(65536)
        query = codec.build_query(query_id, name, qtype)
        host, port = self.server
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(struct.pack("!H", len(query)) + query)
                await writer.drain()
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                data = await reader.readexactly(length)
        except TimeoutError:
            raise DnsTimeout(f"no answer from {self} over TCP") from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise DnsError(f"TCP query to {self} failed: {exc}") from None
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        try:
            message = codec.parse_message(data)
        except codec.FormatError as exc:
            raise BadAnswer(f"malformed answer from {self}: {exc}") from None
        if message.id != query_id:
            raise BadAnswer(f"{self} answered another query over TCP")
        return message

    async def addresses(self, name: str) -> list[str]:
        """The A and AAAA addresses of ``name`` (IPv4 first); NameNotFound when
        neither exists, an empty list when the name has no address."""
        results = await asyncio.gather(
            self.query(name, codec.A), self.query(name, codec.AAAA), return_exceptions=True
        )
        found: list[str] = []
        errors: list[BaseException] = []
        for result in results:
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                errors.append(result)
                continue
            for record in result.answers:
                value = record.value
                if record.type in (codec.A, codec.AAAA) and isinstance(value, str):
                    found += [] if value in found else [value]
        if len(errors) == len(results):
            raise errors[0]
        return found

    async def srv(self, name: str) -> SrvAnswer:
        message = await self.query(name, codec.SRV)
        records = [
            r.value
            for r in message.answers
            if r.type == codec.SRV and isinstance(r.value, codec.Srv)
        ]
        addresses: dict[str, list[str]] = {}
        for record in message.additional:
            if record.type in (codec.A, codec.AAAA) and isinstance(record.value, str):
                addresses.setdefault(record.name.lower(), []).append(record.value)
        return SrvAnswer(records, addresses)
