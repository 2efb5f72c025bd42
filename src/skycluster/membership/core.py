"""The membership core: every decision about links, without I/O or a clock.

The driver (the asyncio node in production, the simulator in tests) feeds it
what happened, with the time, and carries out the actions it returns:

- heartbeats (:mod:`verdicts`): a silent link is closed, an idle one ticks;
- which link wins (:mod:`arbitration`): one link per pair of nodes;
- peer lists (:mod:`peerlists`): who is linked to whom, told as versioned changes;
- the mesh (:mod:`mesh`): dial what peers are linked to, with per-target backoff;
- removals (:mod:`tombstones`): a node a topology's strategy removed stays unlinked
  by the mesh until that strategy lists it again.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from skycluster._counters import Counters
from skycluster.membership import arbitration
from skycluster.membership.actions import (
    Action,
    CloseLink,
    Dial,
    LinkFlapped,
    LinkSteady,
    LoopStalled,
    PublishDown,
    PublishUp,
    RequestPeers,
    SendPeers,
    SendTick,
)
from skycluster.membership.arbitration import Arrival
from skycluster.membership.flaps import Flaps
from skycluster.membership.inputs import (
    DialEnded,
    FrameReceived,
    HandshakeEnded,
    Input,
    LinkDown,
    LinkUp,
    PeersReceived,
    PeersRequested,
    StrategyConnect,
    StrategyDisconnect,
    Tick,
)
from skycluster.membership.mesh import Mesh
from skycluster.membership.names import NameTable, indices
from skycluster.membership.peerlists import OwnList, PeerLists, PeerListUpdate
from skycluster.membership.settings import MembershipSettings
from skycluster.membership.tombstones import Tombstones
from skycluster.membership.verdicts import EARLY, Clock, Heartbeats, LinkClock, next_instant

_HOLD_PERIODS = 3  # after a link goes down, peers list it until they hear: wait for them
_SWEEP_MIN = 256  # names a table holds before unused ones are forgotten
_FLAP_REASONS = ("connection_closed", "heartbeat_timeout")  # a link lost, not a goodbye


@dataclass(slots=True)
class LinkState:
    link: int
    ident: str
    creation: int
    hidden: bool
    bit: int  # 0 for a hidden peer (in no list)
    clock: Clock
    since: float


class Membership:
    def __init__(
        self,
        ident: str,
        settings: MembershipSettings | None = None,
        *,
        table: NameTable | None = None,
        random: Callable[[], float] | None = None,
        counters: Counters | None = None,
    ) -> None:
        self.ident = ident
        self.settings = settings = settings or MembershipSettings()
        self._owns_table = table is None  # a shared table (a simulator's) is never swept
        self.table = table if table is not None else NameTable()
        self._sweep_at = _SWEEP_MIN  # forget unused names once the table holds this many
        self.random = random or _random.Random().random
        self.self_bit = self.table.bit(ident)
        self.heartbeats = Heartbeats(
            settings.heartbeat_interval, settings.heartbeat_timeout, settings.tick_phase
        )
        self.own = OwnList()
        self.lists = PeerLists()
        self.mesh = Mesh(
            settings.retry_initial, settings.retry_max, settings.stable_after, self.random
        )
        self.tombstones = Tombstones(settings.max_tombstones)
        self.flaps = Flaps(settings.stable_after, settings.max_flapping)
        self.links: dict[int, LinkState] = {}
        self.by_ident: dict[str, LinkState] = {}
        self.accepting: dict[str, int] = {}  # ident -> creation, handshakes we admitted
        self.dialling: dict[str, bool] = {}  # ident -> dialled by the mesh
        self.counters = counters if counters is not None else Counters()
        self.unlinked_pairs = 0  # pairs that should be linked and are not (last mesh pass)
        self._dialling_mask = 0
        self._explicit: set[str] = set()  # dials a strategy or the application asked for
        self._pending = 0  # mesh targets waiting for a free dial slot
        self._next_mesh = float("-inf")  # the first pass at the first tick
        self._changed = False  # a list (ours or a peer's) changed since the last count
        self._actions: list[Action] = []

    # -- the driver's side ----------------------------------------------------

    def take(self) -> list[Action]:
        """The actions decided since the last call, in order."""
        actions, self._actions = self._actions, []
        return actions

    def handle(self, event: Input) -> list[Action]:
        """Feed one input; returns the actions it leads to."""
        if isinstance(event, FrameReceived):
            self.heard(event.link, event.now)
        elif isinstance(event, Tick):
            self.tick(event.now, event.lag)
        elif isinstance(event, LinkUp):
            ident = _identity(event.name)
            self.link_up(event.now, event.link, ident, event.name, event.creation, event.hidden)
        elif isinstance(event, LinkDown):
            self.link_down(event.now, event.link, event.reason)
        elif isinstance(event, PeersReceived):
            self.peers_received(event.now, event.link, event.update)
        elif isinstance(event, PeersRequested):
            self.peers_requested(event.now, event.link)
        elif isinstance(event, DialEnded):
            self.dial_ended(event.now, event.ident, linked=event.linked)
        elif isinstance(event, HandshakeEnded):
            self.handshake_ended(event.now, event.ident)
        elif isinstance(event, StrategyConnect):
            self.connect(event.now, _identity(event.name), event.name, event.topology)
        elif isinstance(event, StrategyDisconnect):
            self.disconnect(event.now, event.ident, event.topology)
        return self.take()

    def next_wakeup(self, now: float) -> float:
        """When the driver's timer should call :meth:`tick` next: when the next link
        is due, but at most every quarter step (links due close together are handled
        in one pass, not one wake each) and at least every step (to measure stalls),
        on the ticks' grid."""
        step = self.settings.step
        wake = next_instant(now + EARLY, self.settings.tick_phase, step)
        due = self.heartbeats.next_due()
        if due is not None and due < wake:
            wake = max(due, now + step / 4)
        return wake

    # -- links ----------------------------------------------------------------

    def admit(self, now: float, ident: str, creation: int) -> str | None:
        """A peer's handshake reached the point of admission: why to refuse it, or None
        (then :meth:`link_up` or :meth:`handshake_ended` follows)."""
        linked = self.by_ident.get(ident)
        reason = arbitration.admission(
            self.ident,
            ident,
            creation,
            linked_creation=None if linked is None else linked.creation,
            accepting_creation=self.accepting.get(ident),
            dialling=ident in self.dialling,
            removed=ident in self.tombstones,
        )
        if reason is None:
            self.accepting[ident] = creation
        else:
            self._count(f"admission_refused_{reason}")
        return reason

    def handshake_ended(self, now: float, ident: str) -> None:
        self.accepting.pop(ident, None)
        if self._pending:
            self._complete(now, 0)

    def link_up(
        self,
        now: float,
        link: int,
        ident: str,
        name: str,
        creation: int,
        hidden: bool = False,
        clock: Clock | None = None,
    ) -> bool:
        """An authenticated link; False: refuse it (the same incarnation is linked, or
        a strategy removed the node and nobody asked to link it since)."""
        if self.accepting.get(ident) == creation:
            del self.accepting[ident]
        if ident in self.tombstones and ident not in self._explicit:
            # removed while its handshake ran (or dialled before the removal)
            self._count("links_refused_removed")
            return False
        existing = self.by_ident.get(ident)
        arrival = arbitration.arrival(None if existing is None else existing.creation, creation)
        if arrival is Arrival.DUPLICATE:
            self._count("links_refused_duplicate")
            return False
        if existing is not None:  # Arrival.REPLACES: the old process is gone
            self._act(CloseLink(existing.link, ident, "replaced"))
            self._remove(existing, "connection_closed")
        bit = 0 if hidden else self.table.bit(ident)
        if not hidden:
            self.table.index(ident, name)
        if clock is None:
            clock = LinkClock(now)
        state = LinkState(link, ident, creation, hidden, bit, clock, now)
        self.links[link] = state
        self.by_ident[ident] = state
        self.heartbeats.add(link, clock, now)
        self._count("links_up")
        if not hidden:
            self._changed = True
            self.own.current |= bit
            self.lists.add_peer(ident)
            self.mesh.linked(ident, now)
            self._pending &= ~bit
            self._act(PublishUp(ident, link))
            if not self.settings.hidden:
                self._act(SendPeers(link, self.own.snapshot()))
        return True

    def link_down(self, now: float, link: int, reason: str) -> None:
        """The connection closed (``connection_closed``, or ``shutdown`` after a goodbye)."""
        state = self.links.get(link)
        if state is None:
            return  # the core closed it already (and said why)
        self._remove(state, reason)
        self._lost(state, now, reason)

    def heard(self, link: int, now: float) -> None:
        state = self.links.get(link)
        if state is not None:
            state.clock.last_received = now

    def sent(self, link: int, now: float) -> None:
        state = self.links.get(link)
        if state is not None:
            state.clock.last_sent = now

    def reading_paused(self, link: int, paused: bool, now: float) -> None:
        """Reading a link stopped (a full mailbox): its silence is ours, not the peer's."""
        state = self.links.get(link)
        if state is not None:
            state.clock.reading_paused = paused
            state.clock.last_received = now

    def _remove(self, state: LinkState, reason: str) -> None:
        self.heartbeats.remove(state.link)
        del self.links[state.link]
        if self.by_ident.get(state.ident) is state:
            del self.by_ident[state.ident]
        if not state.hidden:
            self._changed = True
            self.own.current &= ~state.bit
            self.lists.remove_peer(state.ident)
            self._act(PublishDown(state.ident, state.link, reason))
            self._count(f"links_down_{reason}")

    def _lost(self, state: LinkState, now: float, reason: str) -> None:
        """A mesh member's link went down on its own (closed or silent): the mesh
        dials it again after a hold, longer after each flap; flaps are counted and
        the first of a run is reported."""
        if state.hidden:
            return
        lasted = now - state.since
        wait = self.mesh.unlinked(state.ident, now, self._hold(), lasted)
        if reason not in _FLAP_REASONS:  # a goodbye: the peer stopped or dropped us
            return
        flaps = self.flaps.went_down(state.ident, now, lasted)
        if flaps:
            self._count("link_flaps")
            self._act(LinkFlapped(state.ident, reason, lasted, wait, flaps))

    def _hold(self) -> float:
        return _HOLD_PERIODS * self.settings.mesh_period

    # -- time -----------------------------------------------------------------

    def tick(self, now: float, lag: float = 0.0) -> None:
        """The timer fired ``lag`` seconds later than it was due."""
        if lag >= self.settings.step:
            self.heartbeats.lagged(now, lag)
            if lag >= self.settings.heartbeat_interval:  # worth a log line
                self._count("loop_stalls")
                self._act(LoopStalled(lag))
        due = self.heartbeats.due(now)
        for link, silence in due.silent:
            state = self.links[link]
            self._count("heartbeat_timeouts")
            self._act(CloseLink(link, state.ident, "heartbeat_timeout", silence))
            self._remove(state, "heartbeat_timeout")
            self._lost(state, now, "heartbeat_timeout")
        for link in due.idle:
            self._act(SendTick(link))
        if now + EARLY >= self._next_mesh:
            self._mesh_pass(now)

    def _mesh_pass(self, now: float) -> None:
        # on the ticks' grid: the peer lists it sends go out with the ticks
        settings = self.settings
        self._next_mesh = next_instant(now + EARLY, settings.tick_phase, settings.mesh_period)
        if self.settings.hidden:
            return
        self._pending &= self.lists.union()  # no live peer lists them any more: no target
        if self._owns_table and len(self.table) >= self._sweep_at:
            self._forget_names()  # before the commit: its change names what it removed
        update = self.own.commit()
        if update is not None:
            for state in self.links.values():
                if not state.hidden:
                    self._act(SendPeers(state.link, update))
        union = self.lists.union()
        table = self.table
        self.mesh.prune(now, lambda ident: _listed(union, table.find(ident)))
        if self.settings.full_mesh:
            self._complete(now, union)
        for ident, flaps in self.flaps.steady(now, self._linked_since):
            self._act(LinkSteady(ident, flaps))
        if self._changed:  # at idle nothing changes: no need to count again
            self._changed = False
            self.unlinked_pairs = self._count_unlisted(union)

    # -- peer lists and the mesh ----------------------------------------------

    def peers_received(self, now: float, link: int, update: PeerListUpdate) -> None:
        state = self.links.get(link)
        if state is None or state.hidden or self.settings.hidden:
            return
        new, ask = self.lists.apply(state.ident, update)
        self._changed = True
        if ask:
            self._count("peer_list_gaps")
            self._act(RequestPeers(link))
        new &= ~self.self_bit
        if new and self.settings.full_mesh:
            self._complete(now, new)

    def peers_requested(self, now: float, link: int) -> None:
        state = self.links.get(link)
        if state is not None and not state.hidden and not self.settings.hidden:
            self._act(SendPeers(link, self.own.snapshot()))

    def _complete(self, now: float, listed: int) -> None:
        """Dial the nodes in ``listed`` (and those left waiting for a dial slot) that
        we are not linked to, not dialling, not removed, and not backing off from."""
        candidates = (listed | self._pending) & ~(
            self.own.current | self._dialling_mask | self.self_bit
        )
        self._pending = 0
        if not candidates:
            return
        limit = self.settings.max_mesh_dials
        table = self.table
        mesh = self.mesh
        for i in indices(candidates):
            if len(self.dialling) >= limit:
                self._pending = candidates >> i << i  # this one and every later one
                return
            ident = table.ident(i)
            if (
                ident in self.accepting
                or ident in self.by_ident
                or ident in self.tombstones
                or not mesh.may_dial(ident, now)
            ):
                continue
            self.dialling[ident] = True
            self._dialling_mask |= 1 << i
            mesh.dialling(ident)
            self._count("mesh_dials")
            self._act(Dial(ident, table.dial_name(i)))

    def dial_ended(self, now: float, ident: str, *, linked: bool) -> None:
        by_mesh = self.dialling.pop(ident, None)
        self._explicit.discard(ident)
        if by_mesh is None:
            return
        self._dialling_mask &= ~self.table.bit(ident)
        if not linked and ident not in self.by_ident and by_mesh:
            self.mesh.failed(ident, now)
        if self._pending:
            self._complete(now, 0)

    def _forget_names(self) -> None:
        """Forget the names no mask and no record holds (nodes that came and went),
        so the table and the masks stay as large as the names in use. Amortized:
        runs again once the table has doubled."""
        keep = (
            self.self_bit
            | self.own.current
            | self.own.told
            | self.lists.union()
            | self._dialling_mask
            | self._pending
        )
        find = self.table.find
        for idents in (
            self.tombstones.idents(),  # removed: stays refused whoever lists it
            self._explicit,  # wanted by a strategy or the application
            self.mesh.retries,
            self.accepting,
            self.dialling,
        ):
            for ident in idents:
                i = find(ident)
                if i is not None:
                    keep |= 1 << i
        forgotten = self.table.retain(keep)
        if forgotten:
            self.counters.add("names_forgotten", forgotten)
        self._sweep_at = max(_SWEEP_MIN, 2 * len(self.table))

    def _linked_since(self, ident: str) -> float | None:
        state = self.by_ident.get(ident)
        return None if state is None else state.since

    def _count_unlisted(self, union: int) -> int:
        """Pairs that should be linked and are not, as far as this node can tell: a
        node some peer lists that we are not linked to (and did not remove), plus
        pairs of our peers whose lists lack each other."""
        missing_here = union & ~(self.own.current | self.self_bit)
        ours = sum(1 for i in indices(missing_here) if self.table.ident(i) not in self.tombstones)
        members = {s.ident: s.bit for s in self.by_ident.values() if not s.hidden}
        return ours + self.lists.unlinked_pairs(members)

    # -- what strategies and the application ask --------------------------------

    def connect(self, now: float, ident: str, name: str, topology: str | None = None) -> bool:
        """A strategy (``topology``) or the application lists a node: lift the
        topology's removal and dial it unless linked or already being linked.
        True when a dial starts."""
        if topology is not None and self.tombstones.lift(topology, ident):
            self._count("tombstones_lifted")
        if ident == self.ident or ident in self.by_ident:
            return False
        self.table.index(ident, name)
        if ident in self.dialling or ident in self.accepting:
            self._explicit.add(ident)
            return False
        self.dialling[ident] = False
        self._explicit.add(ident)
        self._dialling_mask |= self.table.bit(ident)
        self._act(Dial(ident, name))
        return True

    def disconnect(self, now: float, ident: str, topology: str | None = None) -> bool:
        """A strategy (``topology``) or the application drops a node. A strategy's
        removal stands (no mesh link, no retry, its handshakes refused) until that
        strategy lists the node again. True when a link was closed."""
        if topology is not None:
            self.tombstones.bury(topology, ident, now)
            self.mesh.forget(ident)
            self.flaps.forget(ident)
            self._explicit.discard(ident)  # a dial under way no longer links it
        state = self.by_ident.get(ident)
        if state is None:
            return False
        self._act(CloseLink(state.link, ident, "disconnect"))
        self._remove(state, "disconnect")
        if not state.hidden and topology is None:
            self.mesh.unlinked(ident, now, self._hold(), now - state.since)
        return True

    # -- what /status shows ---------------------------------------------------

    def linked(self) -> list[str]:
        """Identities linked now, hidden ones excluded."""
        return [s.ident for s in self.by_ident.values() if not s.hidden]

    def connectivity(self) -> dict[str, Any]:
        """Who is linked to whom, as the peers' lists say, and what is missing."""
        table = self.table
        return {
            "links": {
                s.ident: sorted(table.idents(self.lists.mask_of(s.ident) & ~s.bit))
                for s in self.by_ident.values()
                if not s.hidden
            },
            "unlinked_pairs": self.unlinked_pairs,
            "backing_off": self.mesh.backing_off(),
            "flapping": self.flaps.counts(),
            "removed": [{"topology": t, "node": i} for t, i, _ in self.tombstones.entries()],
            "list_version": self.own.version,
        }

    def sizes(self) -> dict[str, int]:
        """How much state the core holds (bounded: checked by the simulator)."""
        return {
            "links": len(self.links),
            "accepting": len(self.accepting),
            "dialling": len(self.dialling),
            "retries": len(self.mesh.retries),
            "tombstones": len(self.tombstones),
            "flapping": len(self.flaps),
            "lists": len(self.lists.received),
            "heap": self.heartbeats.entries,
            "names": len(self.table),
        }

    # -- helpers --------------------------------------------------------------

    def _act(self, action: Action) -> None:
        self._actions.append(action)

    def _count(self, key: str) -> None:
        self.counters.add(key)


def _listed(mask: int, index: int | None) -> bool:
    return index is not None and bool(mask >> index & 1)


def _identity(name: str) -> str:
    """``name@host`` of ``name@host[:port]`` (IPv6 hosts are bracketed)."""
    at = name.find("@")
    rest = name[at + 1 :]
    if rest.startswith("["):
        return name[: at + 1] + rest[: rest.index("]") + 1]
    colon = rest.rfind(":")
    return name if colon < 0 else name[: at + 1 + colon]
