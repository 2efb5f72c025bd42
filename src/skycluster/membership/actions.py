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


Action = (
    Dial | CloseLink | SendTick | SendPeers | RequestPeers | PublishUp | PublishDown | LoopStalled
)
