"""Which link wins: exactly one link per pair of nodes.

When both nodes dial each other at once, the connection dialled by the node with
the smaller identity wins (the acceptor of the other one refuses "simultaneous");
a second link to the same incarnation is refused ("alive"); a link from a new
incarnation of a known node replaces the old one, which is then reported down.
"""

from __future__ import annotations

from enum import Enum

SIMULTANEOUS = "simultaneous"
ALIVE = "alive"
NAME = "name"
REMOVED = "removed"  # a strategy of this node removed the peer (tombstones.py)


def admission(
    me: str,
    peer: str,
    creation: int,
    *,
    linked_creation: int | None,
    accepting_creation: int | None,
    dialling: bool,
    removed: bool,
) -> str | None:
    """Acceptor side: the reason to refuse a peer's handshake, or None to go on."""
    if peer == me:
        return NAME
    if linked_creation == creation or accepting_creation == creation:
        return ALIVE
    if removed:
        return REMOVED
    if dialling and me < peer:
        return SIMULTANEOUS  # our own dial wins
    return None


class Arrival(Enum):
    NEW = "new"  # first link to this node
    DUPLICATE = "duplicate"  # the same incarnation is linked already: refuse this one
    REPLACES = "replaces"  # a new incarnation: the old link goes down


def arrival(linked_creation: int | None, creation: int) -> Arrival:
    if linked_creation is None:
        return Arrival.NEW
    if linked_creation == creation:
        return Arrival.DUPLICATE
    return Arrival.REPLACES
