"""What the membership core needs to know, with its defaults written once."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MembershipSettings:
    heartbeat_interval: float = 1.0  # a link idle this long gets a tick
    heartbeat_timeout: float = 3.0  # silence after which a peer is down
    tick_phase: float = 0.0  # ticks go out when now - tick_phase is a multiple of the interval
    full_mesh: bool = True  # link to the peers of our peers
    hidden: bool = False  # link without joining the mesh or being reported
    mesh_period: float = 1.0  # seconds between peer-list updates and mesh checks
    retry_initial: float = 0.5  # first wait before a mesh dial is tried again
    retry_max: float = 30.0  # longest wait between mesh dials of one node
    stable_after: float = 30.0  # a link that lived this long was no flap
    max_mesh_dials: int = 64  # mesh dials in flight at once (no dial storm)
    max_tombstones: int = 4096  # removed nodes remembered (oldest forgotten first)
    max_flapping: int = 4096  # flapping peers remembered (oldest flap forgotten first)
    max_peer_names: int = 4096  # names taken from one peer's list

    @property
    def step(self) -> float:
        """Longest sleep of the driver's timer: a later wake is a stall of the loop.
        A whole fraction of the interval, so that the timer's wakes fall on the
        ticks' grid."""
        interval = self.heartbeat_interval
        return interval / math.ceil(4 * interval / min(interval, self.heartbeat_timeout))
