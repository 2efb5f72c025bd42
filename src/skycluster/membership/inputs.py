"""What happens to a node, as the membership core hears it: each input has a time
(the driver's monotonic clock, or the simulator's virtual one)."""

from __future__ import annotations

from dataclasses import dataclass

from skycluster.membership.peerlists import PeerListUpdate


@dataclass(frozen=True, slots=True)
class Tick:
    """The timer: ``lag`` is how late it woke (0 when on time)."""

    now: float
    lag: float = 0.0


@dataclass(frozen=True, slots=True)
class LinkUp:
    now: float
    link: int
    name: str  # name@host[:port] the peer gave
    creation: int
    hidden: bool = False


@dataclass(frozen=True, slots=True)
class LinkDown:
    now: float
    link: int
    reason: str  # connection_closed | shutdown


@dataclass(frozen=True, slots=True)
class FrameReceived:
    now: float
    link: int


@dataclass(frozen=True, slots=True)
class PeersReceived:
    now: float
    link: int
    update: PeerListUpdate


@dataclass(frozen=True, slots=True)
class PeersRequested:
    now: float
    link: int


@dataclass(frozen=True, slots=True)
class DialEnded:
    now: float
    ident: str
    linked: bool


@dataclass(frozen=True, slots=True)
class HandshakeEnded:
    """A handshake we admitted (``Membership.admit``) failed."""

    now: float
    ident: str


@dataclass(frozen=True, slots=True)
class StrategyConnect:
    now: float
    topology: str | None  # None: the application asked
    name: str


@dataclass(frozen=True, slots=True)
class StrategyDisconnect:
    now: float
    topology: str | None
    ident: str


Input = (
    Tick
    | LinkUp
    | LinkDown
    | FrameReceived
    | PeersReceived
    | PeersRequested
    | DialEnded
    | HandshakeEnded
    | StrategyConnect
    | StrategyDisconnect
)
