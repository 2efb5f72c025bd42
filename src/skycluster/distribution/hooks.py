"""What a layer above the distribution layer hangs on a node.

The distribution layer never imports the layers above it; they plug in here
(the composition root, :mod:`skycluster.runtime`, does the wiring):

* a :data:`FrameHandler` per range of frame types (:mod:`frame_types`), with
  :meth:`Node.handle_frames <skycluster.distribution.node.Node.handle_frames>`;
* one :class:`LinkListener`, with :meth:`Node.listen_links
  <skycluster.distribution.node.Node.listen_links>`, told about the life of
  every established link;
* one :class:`Decider`, with :meth:`Node.decide_with
  <skycluster.distribution.node.Node.decide_with>`: every decision about links
  (admission, which link wins, heartbeats, the mesh, strategies' removals) is
  its own; the node carries them out (:mod:`skycluster.membership.driver`);
* at most one :class:`SecondProtocol`, with :meth:`Node.speak_also
  <skycluster.distribution.node.Node.speak_also>`: another distribution protocol
  (Erlang's, :mod:`skycluster.erlang.node`) that shares the listening port and
  the node's names (``nodes()``, ``connect``, ``disconnect``) and shows its links
  in the node's status (``links_status()``).

Everything here is called on the node's loop, from the link's protocol
callbacks, except that a handler registered with ``any_thread=True`` and
``read_done`` also run on the data loop (``Node.data_loop``) for the links it
reads: it must be quick and must not block. An exception that a handler raises
closes that link only (logged and counted as a protocol error).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import asyncio

    from skycluster.distribution.handshake import Introduction
    from skycluster.distribution.link import Link
    from skycluster.events import DownReason
    from skycluster.names import NodeName

FrameHandler = Callable[["Link", int, bytes], None]
"""``handler(link, kind, payload)``: one frame of type ``kind`` from ``link``,
``payload`` its undecoded msgpack bytes (the frame header stripped). ValueError,
TypeError, IndexError and FrameError mean a malformed frame."""


class LinkListener(Protocol):
    """Hears about the life of established links (one listener per node)."""

    def link_up(self, link: Link) -> None:
        """``link`` is authenticated and accepted; its frames follow."""

    def link_down(self, link: Link) -> None:
        """``link``, once up, closed; no frame of it follows."""

    def read_done(self) -> None:
        """One read from a socket was handled, every frame it held (a batch ends);
        on the thread that read it."""

    def pause_writing(self, link: Link) -> None:
        """``link``'s socket buffer is full: write no more to it until resumed."""

    def resume_writing(self, link: Link) -> None:
        """``link``'s socket buffer has drained below its low-water mark."""


class NoListener:
    """The listener of a node that nothing listens to (a bare distribution node)."""

    def link_up(self, link: Link) -> None:
        pass

    def link_down(self, link: Link) -> None:
        pass

    def read_done(self) -> None:
        pass

    def pause_writing(self, link: Link) -> None:
        pass

    def resume_writing(self, link: Link) -> None:
        pass


class Decider(Protocol):
    """Decides about the node's links; the node asks it at each step of a link's
    life and carries out what it says (dial, close, send, publish)."""

    def admit(self, peer: Introduction) -> str | None:
        """Acceptor side, before the peer proves the cookie: a RejectReason value to
        refuse it, or None to go on (then :meth:`link_up` or :meth:`handshake_ended`)."""

    def handshake_ended(self, identity: str) -> None:
        """A handshake admitted by :meth:`admit` failed."""

    def link_up(self, link: Link) -> bool:
        """``link`` is authenticated: True keeps it (the decider registers it with
        :meth:`Node.register_link`), False refuses it."""

    def link_closed(self, link: Link, reason: DownReason) -> None:
        """``link``, once kept, closed (whoever closed it)."""

    async def connect(self, name: NodeName, topology: str | None) -> bool:
        """Link to ``name`` (asked by ``topology``'s strategy, or by the application
        when None); True once linked."""

    def disconnect(self, identity: str, topology: str | None) -> bool:
        """Drop the link to ``identity``; True when there was one."""

    def connectivity(self) -> dict[str, Any]:
        """Who is linked to whom, as far as this node knows (for /status; call it
        on the node's loop)."""

    @property
    def unlinked_pairs(self) -> int:
        """Pairs that should be linked and are not (a number: read from any thread)."""


class SecondProtocol(Protocol):
    """Another distribution protocol on the node's listening port, with links of
    its own (one per peer, never a peer the node links itself). The node hands it
    the accepted connections whose first bytes it claims, and asks it first about
    every name it is asked to link, list or unlink."""

    def claims(self, first: bytes) -> bool:
        """Whether a connection that opens with ``first`` (one read, at least one
        byte) speaks this protocol."""

    def take(self, transport: asyncio.Transport, first: bytes) -> None:
        """Own an accepted connection from now on; ``first`` is what was read of it."""

    async def owns(self, name: NodeName) -> bool:
        """Whether ``name`` is (or would be) linked by this protocol."""

    async def connect(self, name: NodeName) -> bool:
        """Link to ``name`` (after :meth:`owns` said True); True once linked."""

    def disconnect(self, identity: str) -> bool:
        """Drop this protocol's link to ``identity``; True when there was one."""

    def nodes(self) -> list[str]:
        """The identities this protocol links, hidden ones excluded."""

    def links_status(self) -> list[dict[str, Any]]:
        """This protocol's links as plain data for /status and ``skycluster members``,
        hidden peers included (marked): no secret in it."""
