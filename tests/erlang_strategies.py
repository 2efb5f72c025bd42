"""Hypothesis strategies for Erlang terms, in their canonical Python form (the form
``decode`` returns), and a strict comparison (Python says ``1 == 1.0 == True``;
Erlang does not). Shared by the unit tests and the round trips against ``erl``."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import strategies as st

from skycluster.erlang import (
    Atom,
    BitBinary,
    FrozenList,
    FrozenMap,
    ImproperList,
    Pid,
    Port,
    Reference,
)

atoms = st.text(max_size=255).filter(lambda s: s not in ("true", "false")).map(Atom)
# A node name that erl accepts in a pid, a port or a reference.
node_atoms = st.from_regex(r"[a-z][a-z0-9_]{0,10}@[a-z][a-z0-9.]{0,10}", fullmatch=True).map(Atom)
creations = st.integers(1, 2**32 - 1)


@st.composite
def bit_binaries(draw: st.DrawFn) -> BitBinary:
    data = bytearray(draw(st.binary(min_size=1, max_size=20)))
    bits = draw(st.integers(1, 7))
    data[-1] &= 0xFF << (8 - bits) & 0xFF
    return BitBinary(bytes(data), bits)


pids = st.builds(Pid, node_atoms, st.integers(0, 2**15 - 1), st.integers(0, 2**13 - 1), creations)
ports = st.builds(Port, node_atoms, st.integers(0, 2**28 - 1), creations)
references = st.builds(
    Reference,
    node_atoms,
    creations,
    st.tuples(st.integers(0, 2**18 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
)

leaves = (
    atoms
    | st.booleans()
    | st.integers(0, 255)
    | st.integers(-(2**31), 2**31 - 1)
    | st.integers(-(2**2100), 2**2100)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.binary(max_size=40)
    | bit_binaries()
    | pids
    | ports
    | references
)
hashable_leaves = leaves | st.lists(st.integers(0, 3), min_size=1, max_size=3).map(FrozenList)
map_keys = hashable_leaves | st.tuples(hashable_leaves, hashable_leaves)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (
        st.lists(children, max_size=6)
        | st.lists(children, max_size=6).map(tuple)
        | st.dictionaries(map_keys, children, max_size=5)
        | st.builds(
            ImproperList,
            st.lists(children, min_size=1, max_size=4).map(tuple),
            leaves | st.tuples(children),
        )
    )


terms = st.recursive(leaves, _containers, max_leaves=25)


def canon(value: Any) -> Any:
    """A form of ``value`` whose equality is Erlang's exact equality (``=:=``)."""
    kind = type(value)
    if kind is float:
        return ("float", struct.pack(">d", value))
    if kind in (list, tuple, FrozenList):
        return (kind.__name__, tuple(canon(item) for item in value))
    if kind in (dict, FrozenMap):
        return (kind.__name__, frozenset((canon(k), canon(v)) for k, v in value.items()))
    if kind is ImproperList:
        return ("improper", canon(list(value.items)), canon(value.tail))
    return (kind.__name__, value)


def has_map(value: Any) -> bool:
    """Whether ``value`` holds a map of two keys or more (whose encoded key order
    Erlang chooses by its own term order)."""
    kind = type(value)
    if kind in (dict, FrozenMap):
        return len(value) > 1 or any(has_map(k) or has_map(v) for k, v in value.items())
    if kind in (list, tuple, FrozenList):
        return any(has_map(item) for item in value)
    if kind is ImproperList:
        return any(has_map(item) for item in value.items) or has_map(value.tail)
    return False
