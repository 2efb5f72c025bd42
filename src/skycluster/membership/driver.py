"""The membership core's asyncio driver: feeds it what happens on the node, with
the time, and carries out what it decides.

It is the node's :class:`~skycluster.distribution.hooks.Decider`: the node asks it
about every handshake and every link, and its one timer task drives every link's
heartbeat, the peer lists and the mesh. Nothing here decides anything: each
method turns an event into a call of :class:`~skycluster.membership.core.Membership`
and the actions it returns into socket writes, dials and events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from skycluster._tasks import TaskSet
from skycluster.distribution import frame_types, frames
from skycluster.distribution.handshake import Introduction
from skycluster.distribution.link import Link
from skycluster.distribution.node import Node
from skycluster.events import DownReason, NodeDown, NodeUp
from skycluster.membership.actions import (
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
from skycluster.membership.core import Membership
from skycluster.membership.peerlists import PeerListUpdate
from skycluster.membership.settings import MembershipSettings
from skycluster.membership.verdicts import EARLY, next_instant
from skycluster.names import InvalidNodeName, NodeName, parse_address

log = logging.getLogger("skycluster.membership")

_TICK_FRAME = frames.encode([frame_types.TICK])
_REQUEST_FRAME = frames.encode([frame_types.PEER_LIST_REQUEST])


class MembershipDriver:
    """Owns the core, the timer task and the dials it asks for."""

    def __init__(self, node: Node) -> None:
        self.node = node
        settings = node.settings
        self.core = Membership(
            node.identity,
            MembershipSettings(
                heartbeat_interval=settings.heartbeat_interval,
                heartbeat_timeout=settings.heartbeat_timeout,
                # the wall clock's whole intervals: every node ticks at the same moment
                tick_phase=time.monotonic() - time.time() % settings.heartbeat_interval,
                full_mesh=settings.full_mesh,
                hidden=settings.hidden,
            ),
            counters=node.counters,
        )
        self._tasks = TaskSet(log)
        self._dials: dict[str, asyncio.Task[bool]] = {}
        self._links: dict[int, Link] = {}  # the core's link numbers
        self._numbers: dict[Link, int] = {}
        self._next_number = 0
        self._encoded: tuple[PeerListUpdate, bytes] | None = None  # one update, many links
        self._closed = False
        self._rtt_turn = 0
        core_settings = self.core.settings
        self._next_rtt = next_instant(  # the first grid instant
            time.monotonic(), core_settings.tick_phase, core_settings.heartbeat_interval
        )
        node.decide_with(self)
        # A tick only proves the peer alive, and the read that brought it stamped the
        # link's clock: it is handled (dropped) on whichever thread read it, not
        # handed to the node's thread (a wake-up per peer per second when idle).
        ticks = range(frame_types.TICK, frame_types.TICK + 1)
        node.handle_frames(ticks, _tick_received, any_thread=True)
        node.handle_frames(range(ticks.stop, frame_types.MEMBERSHIP.stop), self.frame_received)

    def start(self) -> None:
        self._tasks.spawn(self._timer(), name="membership timer")

    async def aclose(self) -> None:
        """Stop deciding: the timer and the dials end; links closing from now on (the
        node stopping) are not reported."""
        self._closed = True
        await self._tasks.aclose()

    # -- the node asks ----------------------------------------------------------

    def admit(self, peer: Introduction) -> str | None:
        return self.core.admit(time.monotonic(), peer.name.identity, peer.creation)

    def handshake_ended(self, identity: str) -> None:
        self.core.handshake_ended(time.monotonic(), identity)
        self._run()

    def link_up(self, link: Link) -> bool:
        peer = link.peer
        assert peer is not None
        ident = peer.name.identity
        dial_name = ident
        if peer.address:
            with contextlib.suppress(ValueError):
                dial_name = f"{ident}:{parse_address(peer.address)[1]}"
        self._next_number += 1
        number = self._next_number
        core = self.core
        if not core.link_up(
            time.monotonic(), number, ident, dial_name, peer.creation, peer.hidden, clock=link
        ):
            core.take()
            return False
        self._links[number] = link
        self._numbers[link] = number
        self.node.register_link(link)  # before NodeUp: subscribers find it linked
        self._run()
        return True

    def link_closed(self, link: Link, reason: DownReason) -> None:
        number = self._numbers.pop(link, None)
        if number is None:
            return
        self._links.pop(number, None)
        if self._closed:
            return
        self._link_down_event(link, reason.value)
        self.core.link_down(time.monotonic(), number, reason.value)
        self._run()

    def _link_down_event(self, link: Link, reason: str) -> None:
        hidden = link.peer is not None and link.peer.hidden
        lasted = {"duration": time.time() - link.since if link.since else 0.0}
        self.node.emit("link.down", lasted, peer=link.identity, reason=reason, hidden=hidden)

    async def connect(self, name: NodeName, topology: str | None) -> bool:
        node = self.node
        ident = name.identity
        self.core.connect(time.monotonic(), ident, str(name), topology)
        self._run()
        if ident == node.identity or ident in node.links:
            return True
        dial = self._dials.get(ident)
        if dial is not None:
            return await asyncio.shield(dial)
        return await node.await_link(ident)  # the peer's handshake is under way

    def disconnect(self, identity: str, topology: str | None) -> bool:
        linked = self.core.disconnect(time.monotonic(), identity, topology)
        if not linked:
            self.node.emit("disconnect.error", {}, peer=identity, reason="not_linked")
        self._run()
        return linked

    def connectivity(self) -> dict[str, Any]:
        return self.core.connectivity()

    @property
    def unlinked_pairs(self) -> int:
        return self.core.unlinked_pairs

    # -- frames -------------------------------------------------------------------

    def frame_received(self, link: Link, kind: int, payload: bytes) -> None:
        number = self._numbers.get(link)
        if number is None:
            return
        frame = frames.unpack(payload)
        now = time.monotonic()
        if kind == frame_types.PEER_LIST:
            _, version, base, whole, added, removed = frame
            if not (isinstance(version, int) and isinstance(base, int)):
                raise ValueError("PEER_LIST versions must be integers")
            update = PeerListUpdate(
                version, base, bool(whole), self._mask(added), self._mask(removed)
            )
            self.core.peers_received(now, number, update)
        elif kind == frame_types.PEER_LIST_REQUEST:
            self.core.peers_requested(now, number)
        self._run()

    def _mask(self, names: Any) -> int:
        if not isinstance(names, list):
            raise ValueError("PEER_LIST must carry lists of names")
        table = self.core.table
        mask = 0
        for text in names[: self.core.settings.max_peer_names]:
            # Peers repeat the names we know: only a new one is parsed.
            i = table.known_dial(text) if isinstance(text, str) else None
            if i is None:
                try:
                    name = NodeName.parse(text)
                except InvalidNodeName:
                    self.node.counters.add("bad_peer_names")
                    continue
                i = table.index(name.identity, str(name))
            mask |= 1 << i
        return mask

    # -- the timer ----------------------------------------------------------------

    async def _timer(self) -> None:
        """One timer for every link: wakes when the core's next deadline is due (at
        least a few times per interval) and tells it how late it woke."""
        core = self.core
        now = time.monotonic()
        while True:
            wake = core.next_wakeup(now)
            await asyncio.sleep(max(0.0, wake - time.monotonic()))
            now = time.monotonic()
            core.tick(now, max(0.0, now - wake))
            self._run()
            self._sample_rtt(now)

    def _sample_rtt(self, now: float) -> None:
        """A round trip measured on one link per interval, in turn (for /status), on
        the ticks' grid: the ping and its answer ride with the ticks, no wake-up of
        their own on either side."""
        if now + EARLY < self._next_rtt or not self._links:
            return
        settings = self.core.settings
        self._next_rtt = next_instant(now + EARLY, settings.tick_phase, settings.heartbeat_interval)
        links = list(self._links.values())
        self._rtt_turn = (self._rtt_turn + 1) % len(links)
        link = links[self._rtt_turn]
        if link.writable:
            link.ping(now)

    # -- carrying out -------------------------------------------------------------

    def _run(self) -> None:
        node = self.node
        for action in self.core.take():
            if isinstance(action, SendTick):
                link = self._links.get(action.link)
                if link is not None:
                    link.write_frame(_TICK_FRAME)
            elif isinstance(action, SendPeers):
                link = self._links.get(action.link)
                if link is not None:
                    link.write_frame(self._encode(action.update))
            elif isinstance(action, Dial):
                self._dial(action.ident, action.name)
            elif isinstance(action, CloseLink):
                self._close(action)
            elif isinstance(action, PublishUp):
                link = self._links.get(action.link)
                if link is not None and link.peer is not None:
                    peer = link.peer
                    node.bus.publish(NodeUp(action.ident, peer.address, peer.metadata))
            elif isinstance(action, PublishDown):
                node.bus.publish(NodeDown(action.ident, DownReason(action.reason)))
            elif isinstance(action, RequestPeers):
                link = self._links.get(action.link)
                if link is not None:
                    link.write_frame(_REQUEST_FRAME)
            elif isinstance(action, LoopStalled):
                # The loop ran nothing for a heartbeat interval or more: our ticks
                # were late too, and peers may have reported us down meanwhile.
                stall = {"seconds": action.seconds}
                node.emit("loop.stall", stall, shared=node.settings.shared_loop)
            elif isinstance(action, LinkFlapped):
                node.emit(
                    "link.flap",
                    {"lasted": action.lasted, "retry_in": action.retry_in},
                    peer=action.ident,
                    reason=action.reason,
                    flaps=action.flaps,
                )
            elif isinstance(action, LinkSteady):
                node.emit("link.steady", {}, peer=action.ident, flaps=action.flaps)

    def _encode(self, update: PeerListUpdate) -> bytes:
        if self._encoded is not None and self._encoded[0] is update:
            return self._encoded[1]
        table = self.core.table
        frame = [
            frame_types.PEER_LIST,
            update.version,
            update.base,
            update.full,
            table.dial_names(update.added),
            table.dial_names(update.removed),
        ]
        data = frames.encode(frame)
        self._encoded = (update, data)
        return data

    def _close(self, action: CloseLink) -> None:
        link = self._links.pop(action.link, None)
        if link is None:
            return
        self._numbers.pop(link, None)
        node = self.node
        node.drop_link(link)
        if action.reason == "heartbeat_timeout":
            node.emit("heartbeat.timeout", {"silence": action.silence}, peer=action.ident)
            link.down_reason = DownReason.HEARTBEAT_TIMEOUT
            link.abort()
        elif action.reason == "disconnect":
            node.emit("disconnect.ok", {}, peer=action.ident)
            link.down_reason = DownReason.DISCONNECT
            link.goodbye("disconnect")
        else:  # replaced by a new incarnation's link
            link.down_reason = DownReason.CONNECTION_CLOSED
            link.abort()
        self._link_down_event(link, link.down_reason.value)

    def _dial(self, ident: str, text: str) -> None:
        if self._closed or ident in self._dials:
            return
        try:
            name = NodeName.parse(text)
        except InvalidNodeName:
            self.core.dial_ended(time.monotonic(), ident, linked=False)
            return
        self._dials[ident] = self._tasks.spawn(self._dialled(name), name=f"dial {ident}")

    async def _dialled(self, name: NodeName) -> bool:
        ident = name.identity
        linked = False
        try:
            linked = await self.node.dial(name)
            return linked
        finally:
            self._dials.pop(ident, None)
            if not self._closed:
                self.core.dial_ended(time.monotonic(), ident, linked=linked)
                self._run()


def _tick_received(link: Link, kind: int, payload: bytes) -> None:
    """(any thread) Nothing to do: the read that brought the tick stamped the link."""
