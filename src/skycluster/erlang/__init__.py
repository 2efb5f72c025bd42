"""Erlang distribution: the external term format and the handshake, as cores without I/O.

See ``docs/erlang.md`` for what is built, the term mapping table and the flags.
"""

from skycluster.erlang.atom import Atom
from skycluster.erlang.terms import Limits, TermError, UnencodableTerm, decode, encode
from skycluster.erlang.values import (
    BitBinary,
    FrozenList,
    FrozenMap,
    ImproperList,
    OpaqueFun,
    Pid,
    Port,
    Reference,
)

__all__ = [
    "Atom",
    "BitBinary",
    "FrozenList",
    "FrozenMap",
    "ImproperList",
    "Limits",
    "OpaqueFun",
    "Pid",
    "Port",
    "Reference",
    "TermError",
    "UnencodableTerm",
    "decode",
    "encode",
]
