"""Liveness of an Erlang link by Erlang's tick rules (``net_ticktime``), without a
clock of its own: the driver passes the time.

Erlang checks each link every ``net_ticktime / 4`` seconds: if nothing was sent
since the last check it sends a tick (a zero-length frame); if nothing arrived in
four checks in a row the peer is down (``net_tick_timeout``). A default ``erl``
runs with ``net_ticktime`` 60, so it ticks every 15 s: skycluster's own heartbeat
timeout (seconds) must never apply to such a link. The same ``net_ticktime`` on
both sides is Erlang's rule too; a Python node that joins a cluster with another
ticktime must be configured with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

DEFAULT_TICKTIME: Final = 60.0  # Erlang's default net_ticktime, in seconds
CHECKS: Final = 4  # silent checks in a row before the peer is down


class Verdict(Enum):
    WAIT = "wait"
    SEND_TICK = "send a tick"
    DOWN = "net_tick_timeout"


@dataclass(slots=True)
class TickPolicy:
    """Call :meth:`received` and :meth:`sent` as bytes move, and :meth:`check` at
    :attr:`next_check` (or later): it says whether to send a tick or give up."""

    ticktime: float
    now: float
    _received_since_check: bool = False
    _sent_since_check: bool = False
    _silent_checks: int = 0
    next_check: float = 0.0

    def __post_init__(self) -> None:
        if not self.ticktime > 0:
            raise ValueError(f"net_ticktime={self.ticktime}: a positive number of seconds")
        self.next_check = self.now + self.interval

    @property
    def interval(self) -> float:
        return self.ticktime / CHECKS

    def received(self) -> None:
        self._received_since_check = True

    def sent(self) -> None:
        self._sent_since_check = True

    def check(self, now: float) -> Verdict:
        if now < self.next_check:
            return Verdict.WAIT
        self.next_check = now + self.interval
        if self._received_since_check:
            self._silent_checks = 0
        else:
            self._silent_checks += 1
        self._received_since_check = False
        if self._silent_checks >= CHECKS:
            return Verdict.DOWN
        sent, self._sent_since_check = self._sent_since_check, False
        return Verdict.WAIT if sent else Verdict.SEND_TICK
