"""Operations frames on a link: ask a peer for its membership view.

``skycluster members`` links to a node as a hidden node (no event is published
anywhere, the mesh ignores it) and sends STATUS_REQUEST; the node answers with
STATUS carrying the same map as its ``/status`` endpoint.

Frames (msgpack arrays, numbered in :mod:`skycluster.distribution.frame_types`,
see docs/protocol.md):

* ``[20, id]`` STATUS_REQUEST: ``id`` is an int chosen by the asker.
* ``[21, id, status]`` STATUS: ``status`` is a map (:func:`skycluster.ops.status.node_status`).

Any authenticated peer may ask: it holds the cookie. Answers to unknown ids
and malformed frames are ignored; the asker bounds its wait.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Any

from skycluster.distribution import frames
from skycluster.distribution.frame_types import STATUS, STATUS_REQUEST
from skycluster.errors import NodeUnreachable
from skycluster.names import NodeName

if TYPE_CHECKING:
    from skycluster.distribution.link import Link
    from skycluster.distribution.node import Node

MAX_PENDING = 64


class RemoteStatus:
    """Answers STATUS_REQUEST and matches STATUS answers to the questions asked;
    the node gives it the operations frames (:meth:`frame_received`)."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}

    def frame_received(self, link: Link, kind: int, payload: bytes) -> None:
        """An operations frame (a :data:`~skycluster.distribution.hooks.FrameHandler`)."""
        frame = frames.unpack(payload)
        if not isinstance(frame, list):
            raise ValueError("a link frame must be an array starting with its type")
        if kind == STATUS_REQUEST and len(frame) >= 2 and isinstance(frame[1], int):
            from skycluster.ops.status import node_status

            link.send([STATUS, frame[1], node_status(self._node)])
        elif kind == STATUS and len(frame) >= 3 and isinstance(frame[2], dict):
            waiter = self._pending.get(frame[1]) if isinstance(frame[1], int) else None
            if waiter is not None and not waiter.done():
                waiter.set_result(frame[2])
        # Other operations frame types (from newer peers) are ignored.

    async def query(self, name: NodeName, timeout: float) -> dict[str, Any]:
        """Link to ``name`` if needed and return its status map."""
        node = self._node
        async with asyncio.timeout(timeout):
            if not await node.connect(name):
                raise NodeUnreachable(f"cannot link to {name.identity}")
            link = node.links.get(name.identity)
            if link is None:
                raise NodeUnreachable(f"the link to {name.identity} closed at once")
            if len(self._pending) >= MAX_PENDING:
                raise RuntimeError("too many status requests under way")
            ident = next(self._ids)
            waiter: asyncio.Future[dict[str, Any]] = node.loop.create_future()
            self._pending[ident] = waiter
            try:
                link.send([STATUS_REQUEST, ident])
                return await waiter
            finally:
                del self._pending[ident]
