"""Sans-I/O codec for the Erlang Port Mapper Daemon (EPMD) protocol.

Byte-exact with the EPMD part of the erts "Distribution Protocol" documentation and with
``epmd_srv.c``. No sockets here: functions turn values into bytes and bytes into values, and
:class:`RequestParser` is fed a server connection's bytes and returns the requests in them.

Every request is a frame: a 2-byte big-endian length (not counting itself), then the body whose
first byte is the request code. Replies are not framed; their length follows from their content
(ALIVE2 replies) or the port mapper closes the connection after them (PORT2_RESP, NAMES).
The layouts are drawn in ``docs/portmapper.md``.

Bad bytes raise :class:`ProtocolError`; bad arguments to an encoder raise :class:`ValueError`.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ALIVE2_REQ",
    "ALIVE2_RESP",
    "ALIVE2_X_RESP",
    "EPMD_DEFAULT_PORT",
    "MAX_EXTRA_BYTES",
    "MAX_NAME_BYTES",
    "MAX_NAME_CHARS",
    "MAX_REQUEST_LENGTH",
    "NAMES_REQ",
    "NODE_TYPE_HIDDEN",
    "NODE_TYPE_NORMAL",
    "PORT2_RESP",
    "PORT_PLEASE2_REQ",
    "Alive2Request",
    "Alive2Response",
    "NamesRequest",
    "NamesResponse",
    "PortPlease2Request",
    "ProtocolError",
    "RegisteredNode",
    "Request",
    "RequestParser",
    "alive2_response_size",
    "decode_alive2_response",
    "decode_names_response",
    "decode_port2_response",
    "decode_request",
    "encode_alive2_response",
    "encode_names_response",
    "encode_port2_response",
    "encode_request",
    "validate_name",
]

EPMD_DEFAULT_PORT = 4369

# Request and reply codes (the first byte of a request body or of a reply).
ALIVE2_REQ = 120  # 'x'
ALIVE2_RESP = 121  # 'y', 16-bit creation
ALIVE2_X_RESP = 118  # 'v', 32-bit creation; sent when the node's highest version is >= 6
PORT_PLEASE2_REQ = 122  # 'z'
PORT2_RESP = 119  # 'w'
NAMES_REQ = 110  # 'n'

NODE_TYPE_NORMAL = 77  # 'M'
NODE_TYPE_HIDDEN = 72  # 'H'
PROTOCOL_TCP_IPV4 = 0
HIGHEST_VERSION = 6
LOWEST_VERSION = 5
# The extra field of a skycluster node's registration: how a node that also speaks
# Erlang distribution tells a skycluster node (its own protocol) from a BEAM node.
SKYCLUSTER_EXTRA = b"skycluster"

# A node name is an atom: at most 255 characters, so at most 255 * 4 bytes of UTF-8 (epmd's
# MAXSYMLEN). epmd caps the extra field at the same number of bytes.
MAX_NAME_CHARS = 255
MAX_NAME_BYTES = MAX_NAME_CHARS * 4
MAX_EXTRA_BYTES = MAX_NAME_BYTES
# Largest valid request body: an ALIVE2_REQ with the longest name and extra field.
MAX_REQUEST_LENGTH = 13 + MAX_NAME_BYTES + MAX_EXTRA_BYTES

# The fixed fields in front of the name length; the name/extra tail is shared (see _node_tail).
_ALIVE2_HEAD = struct.Struct(">BHBBHH")  # code, port, node type, protocol, highest, lowest
_PORT2_HEAD = struct.Struct(">BBHBBHH")  # code, result, port, node type, protocol, high, low
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_NAMES_LINE = re.compile(r"name (.+) at port ([0-9]{1,5})", re.ASCII | re.DOTALL)


class ProtocolError(Exception):
    """Bytes that are not a valid EPMD message; the message says what is wrong with them."""


def _check_name(name: str) -> str | None:
    """Return why ``name`` cannot be a node name, or None when it can."""
    if not name:
        return "node name is empty"
    if len(name) > MAX_NAME_CHARS:
        return f"node name has {len(name)} characters, more than the {MAX_NAME_CHARS} allowed"
    # NUL ends a name inside epmd; a line break would forge extra lines in a NAMES reply.
    if any(c in name for c in "\0\r\n"):
        return f"node name {name!r} contains NUL or a line break"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return f"node name {name!r} cannot be encoded as UTF-8 (lone surrogate)"
    return None


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid node name (the part before ``@``), else raise ValueError."""
    problem = _check_name(name)
    if problem is not None:
        raise ValueError(f"{problem}; use 1 to {MAX_NAME_CHARS} characters, no NUL or line break")
    return name


def _check_uint(what: str, value: int, bits: int) -> None:
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{what} must be an integer from 0 to {(1 << bits) - 1}, got {value!r}")


@dataclass(frozen=True, slots=True)
class RegisteredNode:
    """A node as the port mapper knows it: what it registers with ALIVE2_REQ and what
    PORT2_RESP returns about it."""

    name: str  # the part before '@', e.g. "x" for x@host
    port: int  # the node's distribution listen port
    node_type: int = NODE_TYPE_NORMAL  # 77 normal, 72 hidden
    protocol: int = PROTOCOL_TCP_IPV4  # 0 = TCP/IPv4 (the only value in use)
    highest_version: int = HIGHEST_VERSION  # distribution protocol versions the node speaks
    lowest_version: int = LOWEST_VERSION
    extra: bytes = b""

    def __post_init__(self) -> None:
        validate_name(self.name)
        _check_uint("port", self.port, 16)
        _check_uint("node_type", self.node_type, 8)
        _check_uint("protocol", self.protocol, 8)
        _check_uint("highest_version", self.highest_version, 16)
        _check_uint("lowest_version", self.lowest_version, 16)
        if len(self.extra) > MAX_EXTRA_BYTES:
            raise ValueError(
                f"extra has {len(self.extra)} bytes, more than the {MAX_EXTRA_BYTES} allowed"
            )

    @property
    def hidden(self) -> bool:
        return self.node_type == NODE_TYPE_HIDDEN


@dataclass(frozen=True, slots=True)
class Alive2Request:
    """Register ``node``; the registration lasts as long as the connection stays open."""

    node: RegisteredNode


@dataclass(frozen=True, slots=True)
class PortPlease2Request:
    """Ask for the registration of the node called ``name``."""

    name: str

    def __post_init__(self) -> None:
        validate_name(self.name)


@dataclass(frozen=True, slots=True)
class NamesRequest:
    """Ask for all registered names and their ports."""


Request = Alive2Request | PortPlease2Request | NamesRequest


@dataclass(frozen=True, slots=True)
class Alive2Response:
    """Reply to ALIVE2_REQ: result 0 means registered; ``extended`` means ALIVE2_X_RESP."""

    result: int
    creation: int
    extended: bool = True

    def __post_init__(self) -> None:
        _check_uint("result", self.result, 8)
        _check_uint("creation", self.creation, 32 if self.extended else 16)

    @property
    def ok(self) -> bool:
        return self.result == 0


@dataclass(frozen=True, slots=True)
class NamesResponse:
    """Reply to NAMES_REQ: the port mapper's own port and the (name, port) of each node."""

    epmd_port: int
    names: tuple[tuple[str, int], ...]


# --- requests -------------------------------------------------------------------------------


def encode_request(request: Request) -> bytes:
    """The framed bytes of ``request`` (length prefix included)."""
    match request:
        case Alive2Request(node=node):
            head = _ALIVE2_HEAD.pack(
                ALIVE2_REQ,
                node.port,
                node.node_type,
                node.protocol,
                node.highest_version,
                node.lowest_version,
            )
            body = head + _node_tail(node)
        case PortPlease2Request(name=name):
            body = bytes([PORT_PLEASE2_REQ]) + name.encode("utf-8")
        case NamesRequest():
            body = bytes([NAMES_REQ])
    return _U16.pack(len(body)) + body


def _decode_name(raw: bytes, where: str) -> str:
    if len(raw) > MAX_NAME_BYTES:
        raise ProtocolError(
            f"{where}: node name is {len(raw)} bytes long, more than the {MAX_NAME_BYTES} allowed"
        )
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{where}: node name is not valid UTF-8 ({exc.reason})") from None
    problem = _check_name(name)
    if problem is not None:
        raise ProtocolError(f"{where}: {problem}")
    return name


def _node_tail(node: RegisteredNode) -> bytes:
    """Name length, name, extra length, extra: the tail shared by ALIVE2_REQ and PORT2_RESP."""
    name = node.name.encode("utf-8")
    return _U16.pack(len(name)) + name + _U16.pack(len(node.extra)) + node.extra


def _decode_node_tail(body: bytes, offset: int, where: str) -> tuple[str, bytes]:
    """Decode the tail written by _node_tail at ``body[offset:]``; it must end the message."""
    if offset + 4 > len(body):
        raise ProtocolError(f"{where}: truncated: {len(body)} bytes, at least {offset + 4} needed")
    (name_len,) = _U16.unpack_from(body, offset)
    offset += 2
    end_name = offset + name_len
    if end_name + 2 > len(body):
        raise ProtocolError(
            f"{where}: name length {name_len} runs past the end of the {len(body)}-byte message"
        )
    name = _decode_name(body[offset:end_name], where)
    (extra_len,) = _U16.unpack_from(body, end_name)
    if end_name + 2 + extra_len != len(body):
        raise ProtocolError(
            f"{where}: length mismatch: name ({name_len} bytes) and extra ({extra_len} bytes) "
            f"need {end_name + 2 + extra_len} bytes, the message has {len(body)}"
        )
    extra = body[end_name + 2 :]
    if len(extra) > MAX_EXTRA_BYTES:
        raise ProtocolError(f"{where}: extra field of {len(extra)} bytes exceeds {MAX_EXTRA_BYTES}")
    return name, extra


def decode_request(body: bytes) -> Request:
    """Decode one request body (the bytes after the 2-byte length)."""
    if not body:
        raise ProtocolError("empty request (length 0)")
    code = body[0]
    if code == ALIVE2_REQ:
        if len(body) < _ALIVE2_HEAD.size:
            raise ProtocolError(
                f"ALIVE2_REQ: truncated: {len(body)} bytes, at least {_ALIVE2_HEAD.size + 4} needed"
            )
        _, port, node_type, protocol, high, low = _ALIVE2_HEAD.unpack_from(body)
        name, extra = _decode_node_tail(body, _ALIVE2_HEAD.size, "ALIVE2_REQ")
        return Alive2Request(RegisteredNode(name, port, node_type, protocol, high, low, extra))
    if code == PORT_PLEASE2_REQ:
        raw = body[1:]
        # Clients older than OTP R3A sent a trailing NUL; epmd drops it, so do we.
        if raw.endswith(b"\0"):
            raw = raw[:-1]
        return PortPlease2Request(_decode_name(raw, "PORT_PLEASE2_REQ"))
    if code == NAMES_REQ:
        if len(body) != 1:
            raise ProtocolError(f"NAMES_REQ: length mismatch: {len(body)} bytes, expected 1")
        return NamesRequest()
    raise ProtocolError(
        f"unknown request code {code}; this port mapper serves ALIVE2_REQ ({ALIVE2_REQ}), "
        f"PORT_PLEASE2_REQ ({PORT_PLEASE2_REQ}) and NAMES_REQ ({NAMES_REQ})"
    )


class RequestParser:
    """Server side: feed it a connection's bytes, get back the complete requests in them.

    After it raised :class:`ProtocolError` the stream cannot be resynchronised: every later call
    raises the same error, and the connection should be closed.
    """

    def __init__(self, max_length: int = MAX_REQUEST_LENGTH) -> None:
        self._max_length = max_length
        self._buffer = bytearray()
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet form a complete request."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Request]:
        if self._error is not None:
            raise self._error
        self._buffer += data
        requests: list[Request] = []
        try:
            while len(self._buffer) >= 2:
                (length,) = _U16.unpack_from(self._buffer)
                if length == 0:
                    raise ProtocolError("empty request (length 0)")
                if length > self._max_length:
                    raise ProtocolError(
                        f"oversized request: length {length}, at most {self._max_length} allowed"
                    )
                if len(self._buffer) < 2 + length:
                    break
                body = bytes(self._buffer[2 : 2 + length])
                del self._buffer[: 2 + length]
                requests.append(decode_request(body))
        except ProtocolError as exc:
            self._error = exc
            self._buffer.clear()
            raise
        return requests

    def eof(self) -> None:
        """The peer closed its side: raise ProtocolError if a request was cut short."""
        if self._error is not None:
            raise self._error
        if self._buffer:
            self._error = ProtocolError(
                f"truncated request: connection closed with {len(self._buffer)} bytes "
                "of an incomplete request"
            )
            raise self._error


# --- replies --------------------------------------------------------------------------------


def encode_alive2_response(response: Alive2Response) -> bytes:
    if response.extended:
        return bytes([ALIVE2_X_RESP, response.result]) + _U32.pack(response.creation)
    return bytes([ALIVE2_RESP, response.result]) + _U16.pack(response.creation)


def alive2_response_size(code: int) -> int:
    """Total size of an ALIVE2 reply that starts with byte ``code``."""
    if code == ALIVE2_X_RESP:
        return 6
    if code == ALIVE2_RESP:
        return 4
    raise ProtocolError(
        f"unexpected reply code {code} to ALIVE2_REQ; expected {ALIVE2_X_RESP} (ALIVE2_X_RESP) "
        f"or {ALIVE2_RESP} (ALIVE2_RESP)"
    )


def decode_alive2_response(data: bytes) -> Alive2Response:
    """Decode a complete ALIVE2_RESP or ALIVE2_X_RESP."""
    if not data:
        raise ProtocolError("truncated ALIVE2 reply: no bytes")
    size = alive2_response_size(data[0])
    if len(data) != size:
        raise ProtocolError(
            f"ALIVE2 reply: length mismatch: {len(data)} bytes, expected {size}"
            + (" (truncated)" if len(data) < size else "")
        )
    if data[0] == ALIVE2_X_RESP:
        return Alive2Response(data[1], _U32.unpack_from(data, 2)[0], extended=True)
    return Alive2Response(data[1], _U16.unpack_from(data, 2)[0], extended=False)


def encode_port2_response(node: RegisteredNode | None) -> bytes:
    """PORT2_RESP for ``node``, or the 2-byte "not registered" reply (result 1) for None."""
    if node is None:
        return bytes([PORT2_RESP, 1])
    head = _PORT2_HEAD.pack(
        PORT2_RESP,
        0,
        node.port,
        node.node_type,
        node.protocol,
        node.highest_version,
        node.lowest_version,
    )
    return head + _node_tail(node)


def decode_port2_response(data: bytes) -> RegisteredNode | None:
    """Decode a complete PORT2_RESP (all bytes up to the close); None when not registered."""
    if len(data) < 2:
        raise ProtocolError(f"truncated PORT2_RESP: {len(data)} bytes, at least 2 needed")
    if data[0] != PORT2_RESP:
        raise ProtocolError(
            f"unexpected reply code {data[0]} to PORT_PLEASE2_REQ; expected {PORT2_RESP}"
        )
    if data[1] != 0:
        if len(data) != 2:
            raise ProtocolError(
                f"PORT2_RESP: length mismatch: error result {data[1]} followed by "
                f"{len(data) - 2} unexpected bytes"
            )
        return None
    if len(data) < _PORT2_HEAD.size:
        raise ProtocolError(
            f"PORT2_RESP: truncated: {len(data)} bytes, at least {_PORT2_HEAD.size + 4} needed"
        )
    _, _, port, node_type, protocol, high, low = _PORT2_HEAD.unpack_from(data)
    name, extra = _decode_node_tail(data, _PORT2_HEAD.size, "PORT2_RESP")
    return RegisteredNode(name, port, node_type, protocol, high, low, extra)


def encode_names_response(epmd_port: int, names: Iterable[tuple[str, int]]) -> bytes:
    """NAMES reply: the 4-byte port of the port mapper, then ``name N at port P\\n`` per node."""
    _check_uint("epmd_port", epmd_port, 32)
    lines = []
    for name, port in names:
        validate_name(name)
        _check_uint("port", port, 16)
        lines.append(f"name {name} at port {port}\n")
    return _U32.pack(epmd_port) + "".join(lines).encode("utf-8")


def decode_names_response(data: bytes) -> NamesResponse:
    """Decode a complete NAMES reply (all bytes up to the close)."""
    if len(data) < 4:
        raise ProtocolError(f"truncated NAMES reply: {len(data)} bytes, at least 4 needed")
    (epmd_port,) = _U32.unpack_from(data)
    try:
        text = data[4:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"NAMES reply is not valid UTF-8 ({exc.reason})") from None
    if text and not text.endswith("\n"):
        raise ProtocolError("truncated NAMES reply: the last line has no newline")
    names = []
    # str.splitlines() would also split at \r, \x1c, \u2028...: only \n ends a line here.
    for line in text.split("\n")[:-1]:
        match = _NAMES_LINE.fullmatch(line)
        if match is None:
            raise ProtocolError(
                f"NAMES reply line {line[:80]!r} is not of the form 'name N at port P'"
            )
        name, port = match[1], int(match[2])
        problem = _check_name(name)
        if problem is not None:
            raise ProtocolError(f"NAMES reply: {problem}")
        if port > 0xFFFF:
            raise ProtocolError(f"NAMES reply: port {port} of {name!r} is above 65535")
        names.append((name, port))
    return NamesResponse(epmd_port, tuple(names))
