"""A deterministic simulator: many membership cores, virtual time, a simulated network.

The same :class:`~skycluster.membership.core.Membership` the node runs, driven by
events from a heap instead of sockets and timers. Everything random comes from one
seeded generator, so a run is a function of its seed: a failing seed replays
exactly (``python benchmarks/simulate.py --seed N``).

The network: per-message delay and jitter; loss (on an open link a lost segment is
sent again after a retransmission timeout, as TCP does, so frames arrive late and
in order; a lost handshake fails the dial); partitions, symmetric or one way (frames
across are dropped; closing a link across one tells nobody). Processes: killed (the
kernel closes their connections: peers see it at once), restarted (a new creation),
paused (SIGSTOP, or a stalled loop: frames wait, timers fire late, and on resume the
timer runs before the frames that waited are read, as asyncio does after SIGCONT).
Strategies: a Kubernetes-like API lists the admitted nodes; each node's strategy
links to them and removes the ones that left (with the topology's name), or a
static strategy that lists one seed node.

Invariants, checked as events happen: per observer, NodeUp and NodeDown of a peer
alternate; no node links (or reports up) a node its strategy removed. At checkpoints
(:meth:`Simulation.check_converged`): every pair of live admitted nodes is linked,
nobody reports up a node that is dead, the cores' state is bounded.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from skycluster.membership.actions import (
    CloseLink,
    Dial,
    PublishDown,
    PublishUp,
    RequestPeers,
    SendPeers,
    SendTick,
)
from skycluster.membership.core import Membership
from skycluster.membership.names import NameTable
from skycluster.membership.peerlists import PeerListUpdate
from skycluster.membership.settings import MembershipSettings

TOPOLOGY = "k8s"

# Frame kinds on a simulated link.
_TICK = 0
_PEERS = 1
_REQUEST = 2
_FIN = 3  # the connection closed (FIN or RST)
_FINAL = 4  # the dialler's last handshake message: the acceptor's link comes up

_FRAME_OVERHEAD = 4 + 1  # length prefix and the msgpack array header
_TICK_BYTES = _FRAME_OVERHEAD + 1


class Violation(AssertionError):
    """An invariant broke; the message names the seed that replays it."""


@dataclass(slots=True)
class NetworkModel:
    delay: float = 0.0005  # one way, seconds
    jitter: float = 0.0005  # up to this much more, uniformly
    loss: float = 0.0  # probability that a segment is lost
    rto: float = 0.2  # TCP's minimum retransmission timeout
    connect_timeout: float = 5.0  # a dial that got no answer gives up


class End:
    """One end of a simulated connection."""

    __slots__ = ("last_delivery", "lid", "open", "peer", "proc")

    def __init__(self, proc: Process, lid: int) -> None:
        self.proc = proc
        self.lid = lid
        self.open = False
        self.peer: End | None = None
        self.last_delivery = 0.0  # frames from this end arrive in order


@dataclass(eq=False)
class Process:
    """One incarnation of a node."""

    ident: str
    creation: int
    core: Membership
    strategy: str  # "k8s": the API's admitted nodes | "seed": the seed only | "none"
    alive: bool = True
    paused: bool = False
    missed_tick: float | None = None  # when the timer was due while paused
    inbox: list[tuple[Callable[..., None], tuple[Any, ...]]] = field(default_factory=list)
    ends: dict[int, End] = field(default_factory=dict)
    dials: dict[str, int] = field(default_factory=dict)  # ident -> dial token
    wanted: set[str] = field(default_factory=set)  # the strategy's last view
    removed: set[str] = field(default_factory=set)  # what the strategy removed, not listed since
    reported: dict[str, bool] = field(default_factory=dict)  # ident -> last event was up


@dataclass
class Counters:
    frames: int = 0
    ticks: int = 0
    peer_list_frames: int = 0
    peer_list_bytes: int = 0
    dials: int = 0
    links_up: int = 0
    node_downs: int = 0
    dropped: int = 0
    events: int = 0
    downs_by_reason: dict[str, int] = field(default_factory=dict)


class Simulation:
    def __init__(
        self,
        seed: int,
        n: int,
        *,
        settings: MembershipSettings | None = None,
        network: NetworkModel | None = None,
        strategy: str = "k8s",
        poll_interval: float = 5.0,
        start_spread: float = 1.0,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.settings = settings or MembershipSettings()
        self.net = network or NetworkModel()
        self.poll_interval = poll_interval
        self.now = 0.0
        self.table = NameTable()  # interning only: shared to save memory
        self.counters = Counters()
        self.report: dict[str, str] = {}  # figures a run writes down (benchmarks/simulate.py)
        self.procs: dict[str, Process] = {}
        self.admitted: set[str] = set()  # the API's ready nodes
        self.terminating: set[str] = set()  # listed by the API as going away
        self.groups: dict[str, int] = {}  # partition: nodes in different groups are cut
        self.one_way: set[tuple[str, str]] = set()  # (from, to) frames dropped
        self._queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self._lids = 0
        self._tokens = 0
        self._creations = 0
        self.node_settings: dict[str, MembershipSettings] = {}
        self.idents = [f"n{i}@sim" for i in range(n)]
        # a name in a list as a real cluster writes it, api@10.244.12.34:4370: 21 bytes
        # and a msgpack string header
        self.name_bytes = 22
        for i, ident in enumerate(self.idents):
            self.admitted.add(ident)
            # with a seed strategy the seed runs first, the others join within the spread
            first = strategy == "seed" and i == 0
            when = 0.0 if first else self.rng.random() * start_spread
            self.at(when, self.start, ident, strategy)

    # -- the event loop -----------------------------------------------------

    def at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (when, self._seq, fn, args))

    def run_until(self, until: float) -> None:
        queue = self._queue
        counters = self.counters
        while queue and queue[0][0] <= until:
            when, _, fn, args = heapq.heappop(queue)
            self.now = when
            counters.events += 1
            fn(*args)
        self.now = until

    def fail(self, what: str) -> NoReturn:
        raise Violation(f"seed {self.seed}, t={self.now:.3f}: {what}")

    # -- processes ----------------------------------------------------------

    def dial_name(self, ident: str) -> str:
        return f"{ident}:4370"

    def start(self, ident: str, strategy: str = "k8s") -> None:
        old = self.procs.get(ident)
        if old is not None and old.alive:
            return
        self._creations += 1
        settings = self.node_settings.get(ident, self.settings)
        core = Membership(ident, settings, table=self.table, random=self.rng.random)
        proc = Process(ident, self._creations, core, strategy)
        self.procs[ident] = proc
        first = self.now + settings.step * self.rng.random()
        self.at(first, self._tick, proc, first)
        self.at(self.now, self._poll, proc, True)

    def kill(self, ident: str) -> None:
        """kill -9: the kernel closes the connections (peers that can be reached see it)."""
        proc = self.procs.get(ident)
        if proc is None or not proc.alive:
            return
        proc.alive = False
        proc.inbox.clear()
        for end in list(proc.ends.values()):
            self._close_end(end)
        proc.ends.clear()

    def restart(self, ident: str, strategy: str | None = None) -> None:
        old = self.procs.get(ident)
        self.kill(ident)
        self.start(ident, strategy or (old.strategy if old else "k8s"))

    def pause(self, ident: str, seconds: float) -> None:
        """SIGSTOP (or a loop stalled for ``seconds``), then SIGCONT."""
        proc = self.procs.get(ident)
        if proc is None or not proc.alive or proc.paused:
            return
        proc.paused = True
        self.at(self.now + seconds, self._resume, proc)

    def _resume(self, proc: Process) -> None:
        if not proc.alive or not proc.paused:
            return
        proc.paused = False
        if proc.missed_tick is not None:  # asyncio runs the late timer first
            due, proc.missed_tick = proc.missed_tick, None
            self._tick(proc, due)
        inbox, proc.inbox = proc.inbox, []
        for fn, args in inbox:
            if not proc.alive or proc.paused:
                proc.inbox.append((fn, args))
                continue
            fn(*args)

    def _to(self, proc: Process, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn`` on the process now, or when it resumes; never when dead."""
        if not proc.alive:
            return
        if proc.paused:
            proc.inbox.append((fn, args))
        else:
            fn(*args)

    def _tick(self, proc: Process, due: float) -> None:
        if not proc.alive:
            return
        if proc.paused:
            if proc.missed_tick is None:
                proc.missed_tick = due
            return
        core = proc.core
        core.tick(self.now, max(0.0, self.now - due))
        self._run(proc)
        wake = core.next_wakeup(self.now)
        self.at(wake, self._tick, proc, wake)

    # -- the strategies -----------------------------------------------------

    def admit(self, ident: str) -> None:
        """The API lists the node as ready (again)."""
        self.terminating.discard(ident)
        self.admitted.add(ident)
        self._api_changed()

    def terminate(self, ident: str) -> None:
        """The node's pod turns terminating: strategies remove it."""
        self.admitted.discard(ident)
        self.terminating.add(ident)
        self._api_changed()

    def forget(self, ident: str) -> None:
        """The pod is gone from the API altogether."""
        self.admitted.discard(ident)
        self.terminating.discard(ident)
        self._api_changed()

    def _api_changed(self) -> None:
        for proc in self.procs.values():
            if proc.alive and proc.strategy == "k8s":
                self.at(self.now + 0.5 * self.rng.random(), self._poll, proc, False)

    def _poll(self, proc: Process, schedule: bool) -> None:
        if not proc.alive:
            return
        if schedule:
            jitter = 0.9 + 0.2 * self.rng.random()
            self.at(self.now + self.poll_interval * jitter, self._poll, proc, True)
        self._to(proc, self._poll_now, proc)

    def _poll_now(self, proc: Process) -> None:
        core = proc.core
        if proc.strategy == "k8s":
            view = self.admitted - {proc.ident}
            # A strategy removes what left its view, and what the API says is going.
            gone = (proc.wanted - view) | (self.terminating - {proc.ident})
            for ident in gone:
                core.disconnect(self.now, ident, TOPOLOGY)
            proc.removed = (proc.removed | gone) - view
        elif proc.strategy == "seed":
            view = {self.idents[0]} - {proc.ident}
        else:
            view = set()
        proc.wanted = view
        for ident in sorted(view):
            if ident not in core.by_ident:
                core.connect(self.now, ident, self.dial_name(ident), TOPOLOGY)
        self._run(proc)

    # -- the network --------------------------------------------------------

    def cut(self, a: str, b: str) -> bool:
        groups = self.groups
        if groups and groups.get(a, 0) != groups.get(b, 0):
            return True
        return bool(self.one_way) and (a, b) in self.one_way

    def _latency(self) -> float:
        net = self.net
        delay = net.delay + net.jitter * self.rng.random()
        if net.loss:
            rto = net.rto
            while self.rng.random() < net.loss:
                delay += rto
                rto *= 2
        return delay

    def _send(self, end: End, kind: int, payload: Any = None) -> None:
        peer = end.peer
        if peer is None or not end.open:
            return
        self.counters.frames += 1
        if self.cut(end.proc.ident, peer.proc.ident):
            self.counters.dropped += 1
            return
        arrive = max(self.now + self._latency(), end.last_delivery)
        end.last_delivery = arrive
        self.at(arrive, self._arrive, peer, kind, payload)

    def _tick_frame(self, end: End) -> None:
        """A tick only stamps the receiver's clock: unless the receiver is paused or
        cut off, stamp it with its arrival time now instead of queueing an event (most
        of the frames of an idle cluster; a simulation of 1,000 nodes would be slow)."""
        peer = end.peer
        if peer is None or not end.open:
            return
        if peer.proc.paused or not peer.open or self.cut(end.proc.ident, peer.proc.ident):
            self._send(end, _TICK)
            return
        self.counters.frames += 1
        # (a tick that loss delays stamps its arrival time a little early: harmless)
        peer.proc.core.heard(peer.lid, self.now + self._latency())

    def _arrive(self, end: End, kind: int, payload: Any) -> None:
        self._to(end.proc, self._frame, end, kind, payload)

    def _frame(self, end: End, kind: int, payload: Any) -> None:
        proc = end.proc
        core = proc.core
        if kind == _FINAL:
            self._final(end)
            return
        if not end.open:
            return
        if kind == _FIN:
            end.open = False
            proc.ends.pop(end.lid, None)
            core.link_down(self.now, end.lid, "connection_closed")
        else:
            core.heard(end.lid, self.now)
            if kind == _PEERS:
                core.peers_received(self.now, end.lid, payload)
            elif kind == _REQUEST:
                core.peers_requested(self.now, end.lid)
        self._run(proc)

    def _close_end(self, end: End) -> None:
        if end.open:
            self._send(end, _FIN)
            end.open = False
        end.proc.ends.pop(end.lid, None)

    # -- dialling and the handshake -------------------------------------------

    def _dial(self, src: Process, ident: str) -> None:
        self.counters.dials += 1
        self._tokens += 1
        token = self._tokens
        src.dials[ident] = token
        self.at(self.now + self.net.connect_timeout, self._dial_timeout, src, ident, token)
        if self.cut(src.ident, ident):
            return  # no answer: the dial times out
        self.at(self.now + self._latency(), self._hello, src, ident, token)

    def _dial_timeout(self, src: Process, ident: str, token: int) -> None:
        self._to(src, self._end_dial, src, ident, token, None)

    def _end_dial(self, src: Process, ident: str, token: int, linked: bool | None) -> None:
        if src.dials.get(ident) != token:
            return
        del src.dials[ident]
        core = src.core
        if linked is None:
            linked = ident in core.by_ident
        core.dial_ended(self.now, ident, linked=linked)
        self._run(src)

    def _reply(self, dst: Process, src: Process, fn: Callable[..., None], *args: Any) -> None:
        """A handshake message from the acceptor back to the dialler, if the way is open."""
        if not self.cut(dst.ident, src.ident):
            self.at(self.now + self._latency(), self._to, src, fn, *args)

    def _hello(self, src: Process, ident: str, token: int) -> None:
        if not src.alive:
            return
        dst = self.procs.get(ident)
        if dst is None or not dst.alive:  # nothing listens: refused at once
            if not self.cut(ident, src.ident):
                self.at(self.now + self._latency(), self._to, src, self._refused, src, ident, token)
            return
        self._to(dst, self._admit, src, dst, token)

    def _refused(self, src: Process, ident: str, token: int) -> None:
        self._end_dial(src, ident, token, False)

    def _admit(self, src: Process, dst: Process, token: int) -> None:
        if not src.alive:
            return
        reason = dst.core.admit(self.now, src.ident, src.creation)
        self._run(dst)
        if reason is not None:
            if reason in ("simultaneous", "alive"):
                return  # the dialler waits for the other link, or times out
            self._reply(dst, src, self._refused_by, dst, src, token)
            return
        self._lids += 1
        theirs = End(dst, self._lids)
        self._lids += 1
        ours = End(src, self._lids)
        theirs.peer, ours.peer = ours, theirs
        limit = self.net.connect_timeout
        self.at(self.now + limit, self._to, dst, self._handshake_timeout, dst, theirs)
        self._reply(dst, src, self._accepted, dst, src, ours, token)

    def _refused_by(self, dst: Process, src: Process, token: int) -> None:
        self._end_dial(src, dst.ident, token, False)

    def _handshake_timeout(self, dst: Process, end: End) -> None:
        """The dialler never finished the handshake we admitted."""
        assert end.peer is not None
        src = end.peer.proc
        if not end.open and dst.core.accepting.get(src.ident) == src.creation:
            dst.core.handshake_ended(self.now, src.ident)
            self._run(dst)

    def _accepted(self, dst: Process, src: Process, ours: End, token: int) -> None:
        if src.dials.get(dst.ident) != token or not dst.alive:
            return  # gave up already; the acceptor's handshake times out
        core = src.core
        if core.link_up(self.now, ours.lid, dst.ident, self.dial_name(dst.ident), dst.creation):
            ours.open = True
            src.ends[ours.lid] = ours
            self._link_came_up(src, dst.ident)
            self._send(ours, _FINAL)
            self._end_dial(src, dst.ident, token, True)
        else:
            self._end_dial(src, dst.ident, token, dst.ident in core.by_ident)
        self._run(src)

    def _final(self, end: End) -> None:
        proc = end.proc
        src_end = end.peer
        assert src_end is not None
        src = src_end.proc
        core = proc.core
        if not src_end.open or not src.alive:
            if core.accepting.get(src.ident) == src.creation:
                core.handshake_ended(self.now, src.ident)
            self._run(proc)
            return
        if core.link_up(self.now, end.lid, src.ident, self.dial_name(src.ident), src.creation):
            end.open = True
            proc.ends[end.lid] = end
            self._link_came_up(proc, src.ident)
        else:
            end.open = True
            self._close_end(end)  # refused: the dialler sees its link close
        self._run(proc)

    def _link_came_up(self, proc: Process, ident: str) -> None:
        self.counters.links_up += 1
        if ident in proc.removed:
            self.fail(f"{proc.ident} linked {ident}, which its strategy removed")

    # -- actions ------------------------------------------------------------

    def _run(self, proc: Process) -> None:
        core = proc.core
        counters = self.counters
        for action in core.take():
            kind = type(action)
            if kind is SendTick:
                end = proc.ends.get(action.link)  # type: ignore[union-attr]
                if end is not None:
                    counters.ticks += 1
                    self._tick_frame(end)
            elif kind is SendPeers:
                assert isinstance(action, SendPeers)
                end = proc.ends.get(action.link)
                if end is not None:
                    update = action.update
                    counters.peer_list_frames += 1
                    names = (update.added | update.removed).bit_count()
                    counters.peer_list_bytes += _FRAME_OVERHEAD + 8 + names * self.name_bytes
                    self._send(end, _PEERS, update)
                    core.sent(action.link, self.now)
            elif kind is Dial:
                assert isinstance(action, Dial)
                self._dial(proc, action.ident)
            elif kind is CloseLink:
                assert isinstance(action, CloseLink)
                end = proc.ends.get(action.link)
                if end is not None:
                    self._close_end(end)
            elif kind is PublishUp:
                assert isinstance(action, PublishUp)
                self._published(proc, action.ident, True, "")
            elif kind is PublishDown:
                assert isinstance(action, PublishDown)
                self._published(proc, action.ident, False, action.reason)
            elif kind is RequestPeers:
                assert isinstance(action, RequestPeers)
                end = proc.ends.get(action.link)
                if end is not None:
                    self._send(end, _REQUEST)

    def _published(self, proc: Process, ident: str, up: bool, reason: str) -> None:
        was_up = proc.reported.get(ident, False)
        if up == was_up:
            self.fail(f"{proc.ident} reported {ident} {'up' if up else 'down'} twice in a row")
        proc.reported[ident] = up
        if up:
            if ident in proc.removed:
                self.fail(f"{proc.ident} reported {ident} up, which its strategy removed")
        else:
            counters = self.counters
            counters.node_downs += 1
            counters.downs_by_reason[reason] = counters.downs_by_reason.get(reason, 0) + 1
            del proc.reported[ident]
        if up and ident in proc.dials:  # a dial refused as simultaneous waited for this
            self.at(self.now, self._to, proc, self._end_dial, proc, ident, proc.dials[ident], True)

    # -- faults ---------------------------------------------------------------

    def partition(self, groups: dict[str, int]) -> None:
        self.groups = dict(groups)

    def block(self, src: str, dst: str) -> None:
        """Frames from ``src`` to ``dst`` are dropped (an asymmetric partition)."""
        self.one_way.add((src, dst))

    def heal(self) -> None:
        self.groups = {}
        self.one_way = set()
        self.net.loss = 0.0

    # -- checks ---------------------------------------------------------------

    def live(self) -> list[Process]:
        return [p for p in self.procs.values() if p.alive and not p.paused]

    def missing_pairs(self, among: list[Process] | None = None) -> int:
        """Pairs of live admitted nodes not linked both ways."""
        procs = among if among is not None else self.expected_members()
        missing = 0
        for i, a in enumerate(procs):
            links = a.core.by_ident
            for b in procs[i + 1 :]:
                ab = links.get(b.ident)
                ba = b.core.by_ident.get(a.ident)
                if (
                    ab is None
                    or ba is None
                    or ab.creation != b.creation
                    or ba.creation != a.creation
                ):
                    missing += 1
        return missing

    def expected_members(self) -> list[Process]:
        return [p for p in self.live() if p.ident in self.admitted]

    def check_converged(self) -> None:
        members = self.expected_members()
        missing = self.missing_pairs(members)
        if missing:
            example = ""
            for i, a in enumerate(members):
                for b in members[i + 1 :]:
                    if b.ident not in a.core.by_ident or a.ident not in b.core.by_ident:
                        example = f" (e.g. {a.ident} - {b.ident})"
                        break
                if example:
                    break
            self.fail(f"{missing} pairs of live admitted nodes not linked{example}")
        for proc in self.live():
            for ident in proc.core.by_ident:
                if ident in self.terminating and proc.ident in self.admitted:
                    self.fail(f"{proc.ident} is linked to {ident}, which is terminating")
            for ident in proc.reported:
                peer = self.procs.get(ident)
                if peer is None or not peer.alive:
                    self.fail(f"{proc.ident} reports {ident} up, which is dead")
                state = proc.core.by_ident.get(ident)
                if state is None or state.creation != peer.creation:
                    self.fail(f"{proc.ident} reports {ident} up, linked to an old incarnation")
        self.check_bounded()

    def check_bounded(self) -> None:
        n = len(self.idents)
        for proc in self.procs.values():
            if not proc.alive:
                continue
            sizes = proc.core.sizes()
            limits = {
                "links": n,
                "accepting": n,
                "dialling": n,
                "retries": n,
                "tombstones": min(n, proc.core.settings.max_tombstones),
                "lists": n,
                "heap": 4 * n + 16,
            }
            for key, limit in limits.items():
                if sizes[key] > limit:
                    self.fail(f"{proc.ident}: {key} holds {sizes[key]} entries (bound {limit})")

    def idle_frames(self, seconds: float) -> float:
        """Frames per live node per second over the next ``seconds`` (runs the simulation)."""
        before = self.counters.frames
        self.run_until(self.now + seconds)
        return (self.counters.frames - before) / max(1, len(self.live())) / seconds


def time_to_mesh(sim: Simulation, limit: float, step: float = 0.25) -> float | None:
    """Run until every pair of expected members is linked; the virtual time it took."""
    began = sim.now
    while sim.now - began < limit:
        sim.run_until(sim.now + step)
        members = sim.expected_members()
        if len(members) < len(sim.admitted):
            continue  # not every admitted node runs yet
        if any(len(p.core.by_ident) < len(members) - 1 for p in members):
            continue  # cheap: someone still lacks links
        if sim.missing_pairs(members) == 0 and len(members) > 1:
            return sim.now - began
    return None


# -- random faults, for many seeds ------------------------------------------------


@dataclass
class ChaosResult:
    seed: int
    n: int
    faults: list[str]
    node_downs: int
    events: int


def chaos(
    seed: int,
    n: int = 6,
    *,
    duration: float = 40.0,
    faults: int = 8,
    settings: MembershipSettings | None = None,
) -> ChaosResult:
    """A random run: the cluster forms, faults happen for ``duration`` seconds, then
    everything heals; after a quiet period every live admitted pair must be linked."""
    settings = settings or MembershipSettings(retry_max=10.0)
    sim = Simulation(seed, n, settings=settings, poll_interval=5.0)
    rng = random.Random(seed * 7919 + 1)
    log: list[str] = []
    start = 10.0
    sim.run_until(start)
    sim.check_converged()
    for _ in range(faults):
        when = start + rng.random() * duration
        log.append(_schedule_fault(sim, rng, when, start + duration))
    end = start + duration
    sim.at(end, _heal_everything, sim)
    step = 1.0
    while sim.now < end:
        sim.run_until(sim.now + step)
        sim.check_bounded()
    quiet = settings.heartbeat_timeout + sim.poll_interval * 1.1 + 5 * settings.mesh_period + 1.0
    sim.run_until(end + quiet + sim.net.connect_timeout)
    try:
        sim.check_converged()
    except Violation as exc:
        raise Violation(f"{exc}; faults: {'; '.join(log)}") from None
    return ChaosResult(seed, n, log, sim.counters.node_downs, sim.counters.events)


def _heal_everything(sim: Simulation) -> None:
    sim.heal()
    for proc in list(sim.procs.values()):
        if proc.paused:
            sim._resume(proc)


_FAULTS = (
    "kill",
    "restart",
    "pause",
    "stall",
    "partition",
    "one_way",
    "loss",
    "terminate",
    "readmit",
)


def _schedule_fault(sim: Simulation, rng: random.Random, when: float, end: float) -> str:
    ident = rng.choice(sim.idents)
    kind = rng.choice(_FAULTS)
    length = rng.uniform(0.5, 12.0)
    if kind == "kill":
        sim.at(when, sim.kill, ident)
        sim.at(min(end, when + length), sim.start, ident, "k8s")
    elif kind == "restart":
        sim.at(when, sim.restart, ident)
    elif kind == "pause":
        sim.at(when, sim.pause, ident, length)
    elif kind == "stall":
        length = rng.uniform(0.2, sim.settings.heartbeat_timeout * 0.9)
        sim.at(when, sim.pause, ident, length)
    elif kind == "partition":
        groups = {i: rng.randrange(2) for i in sim.idents}
        sim.at(when, sim.partition, groups)
        sim.at(min(end, when + length), sim.partition, {})
    elif kind == "one_way":
        other = rng.choice([i for i in sim.idents if i != ident])
        sim.at(when, sim.block, ident, other)
        sim.at(min(end, when + length), _unblock, sim, ident, other)
    elif kind == "loss":
        loss = rng.uniform(0.02, 0.3)
        sim.at(when, _set_loss, sim, loss)
        sim.at(min(end, when + length), _set_loss, sim, 0.0)
    elif kind == "terminate":
        # The scenario: terminating, removed by everyone, restarted at once at the
        # same address with a strategy that discovers nobody. Stays out.
        sim.at(when, sim.terminate, ident)
        sim.at(when + 0.6, sim.restart, ident, "none")
    elif kind == "readmit":
        sim.at(when, sim.terminate, ident)
        sim.at(min(end, when + length), sim.admit, ident)
        sim.at(min(end, when + length), sim.restart, ident, "k8s")
    return f"{kind} {ident} at {when:.2f}" + (f" for {length:.2f}" if kind != "restart" else "")


def _unblock(sim: Simulation, src: str, dst: str) -> None:
    sim.one_way.discard((src, dst))


def _set_loss(sim: Simulation, loss: float) -> None:
    sim.net.loss = loss


__all__ = [
    "ChaosResult",
    "NetworkModel",
    "PeerListUpdate",
    "Simulation",
    "Violation",
    "chaos",
    "time_to_mesh",
]
