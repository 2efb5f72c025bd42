"""Membership: every decision about links (heartbeat verdicts, which link wins,
peer lists, the mesh and its retries, strategies' removals) in a core without
I/O or a clock of its own, driven by the node in production and by the
simulator (:mod:`skycluster.membership.simulator`) in tests."""

from skycluster.membership.core import Membership
from skycluster.membership.peerlists import PeerListUpdate
from skycluster.membership.settings import MembershipSettings

__all__ = ["Membership", "MembershipSettings", "PeerListUpdate"]
