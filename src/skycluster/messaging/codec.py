"""How messages become bytes: msgpack, plus the types an application registers.

A message is a msgpack value: ``dict``, ``list`` (tuples arrive as lists),
``str``, ``bytes``, ``int``, ``float``, ``bool`` or ``None``, nested freely.
Other types are added with :func:`register_type`, which maps a class to a
msgpack extension code and a pair of functions::

    skycluster.register_type(Decimal, 1, lambda d: str(d).encode(), lambda b: Decimal(b.decode()))

Register the same types, with the same codes, on every node (before sending);
a node that receives an extension code it does not know drops that message,
logs it once and counts it (``undecodable_messages``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import msgpack

from skycluster.errors import UnencodableMessage

_encoders: dict[type, tuple[int, Callable[[Any], bytes]]] = {}
_decoders: dict[int, Callable[[bytes], Any]] = {}
_local = threading.local()


def register_type(
    cls: type, code: int, encode: Callable[[Any], bytes], decode: Callable[[bytes], Any]
) -> None:
    """Send instances of ``cls`` as msgpack extension ``code`` (0..127): ``encode(obj)``
    gives bytes, ``decode(bytes)`` the object again. Process-wide; call it at import
    time on every node. Decoders run on the node's thread: keep them quick."""
    if not isinstance(code, int) or not 0 <= code <= 127:
        raise ValueError(f"extension code must be an int from 0 to 127, got {code!r}")
    known = _decoders.get(code)
    if known is not None and _encoders.get(cls, (None,))[0] != code:
        raise ValueError(f"extension code {code} is registered already")
    _encoders[cls] = (code, encode)
    _decoders[code] = decode


def _default(obj: Any) -> Any:
    entry = _encoders.get(type(obj))
    if entry is None:
        if isinstance(obj, tuple | set | frozenset):
            return list(obj)
        raise UnencodableMessage(
            f"cannot send a {type(obj).__name__}: messages hold dict, list, str, bytes, "
            "int, float, bool and None; add types with skycluster.register_type"
        )
    code, encode = entry
    return msgpack.ExtType(code, encode(obj))


def _packer() -> Any:
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True, autoreset=True, default=_default)
    return packer


def encode(message: Any) -> bytes:
    """One message as msgpack bytes (a thread-safe packer per thread)."""
    packer = getattr(_local, "packer", None) or _packer()
    try:
        data: bytes = packer.pack(message)
    except UnencodableMessage:
        _local.packer = None  # its buffer may hold half a message
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        _local.packer = None
        raise UnencodableMessage(f"cannot encode the message: {exc}") from None
    return data


def encode_key(key: Any) -> bytes:
    """A mailbox name, topic or reference (str or int) inside a frame."""
    data: bytes = _packer().pack(key)
    return data


class Undecodable:
    """Stands in for an extension value this node cannot decode."""

    __slots__ = ("code", "why")

    def __init__(self, code: int, why: str) -> None:
        self.code = code
        self.why = why


class Decoder:
    """Decodes frames; records whether an extension value could not be decoded."""

    def __init__(self) -> None:
        self.failed: Undecodable | None = None

    def _ext(self, code: int, data: bytes) -> Any:
        decode = _decoders.get(code)
        if decode is None:
            value = Undecodable(code, f"unknown extension code {code} (see register_type)")
        else:
            try:
                return decode(data)
            except Exception as exc:  # a user decoder failing costs this message only
                value = Undecodable(code, f"the decoder of code {code} raised {exc!r}")
        self.failed = value
        return value

    def decode(self, payload: bytes | memoryview) -> Any:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False, ext_hook=self._ext)


def contains_undecodable(value: Any) -> bool:
    """Slow path: does this decoded message hold an :class:`Undecodable`?"""
    if isinstance(value, Undecodable):
        return True
    if isinstance(value, list):
        return any(contains_undecodable(item) for item in value)
    if isinstance(value, dict):
        return any(contains_undecodable(k) or contains_undecodable(v) for k, v in value.items())
    return False


def copy(message: Any) -> Any:
    """What the receiver of ``message`` would get: for local delivery."""
    decoder = Decoder()
    value = decoder.decode(encode(message))
    return value
