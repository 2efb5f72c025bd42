"""What the membership core asks its driver to do. Links are the driver's
integer handles (never reused); names are identities (``name@host``)."""

from __future__ import annotations

from dataclasses import dataclass

from skycluster.membership.peerlists import PeerListUpdate


@dataclass(frozen=True, slots=True)
class Dial:
    ident: str
    name: str  # what to dial: the identity with the port last heard, name@host:port


@dataclass(frozen=True, slots=True)
class CloseLink:
    link: int
    ident: str
    reason: str  # heartbeat_timeout | disconnect | replaced | duplicate
    silence: float = 0.0  # for heartbeat_timeout: seconds the peer was silent


@dataclass(frozen=True, slots=True)
class SendTick:
    """One small one-way frame on a link idle for an interval."""

    link: int


@dataclass(frozen=True, slots=True)
class SendPeers:
    """Our peer list, whole or as a change (names as masks of the core's table)."""

    link: int
    update: PeerListUpdate


@dataclass(frozen=True, slots=True)
class RequestPeers:
    """Ask the peer for its whole list: a change did not follow the version we hold."""

    link: int


@dataclass(frozen=True, slots=True)
class PublishUp:
    ident: str
    link: int


@dataclass(frozen=True, slots=True)
class PublishDown:
    ident: str
    link: int
    reason: str  # a DownReason value


@dataclass(frozen=True, slots=True)
class LoopStalled:
    """The node's loop woke ``seconds`` late (counted and logged by the driver)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class LinkFlapped:
    """A link went down ``lasted`` seconds after it came up (less than ``stable_after``):
    the ``flaps``-th in a row for this peer (1: the first, the one worth a log line);
    the mesh dials it again in ``retry_in`` seconds at the earliest."""

    ident: str
    reason: str
    lasted: float
    retry_in: float
    flaps: int


@dataclass(frozen=True, slots=True)
class LinkSteady:
    """A peer that flapped ``flaps`` times has kept its link for ``stable_after``."""

    ident: str
    flaps: int


Action = (
    Dial
    | CloseLink
    | SendTick
    | SendPeers
    | RequestPeers
    | PublishUp
    | PublishDown
    | LoopStalled
    | LinkFlapped
    | LinkSteady
)
