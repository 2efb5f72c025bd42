"""The membership view of one node, as plain data (JSON and msgpack friendly).

Runs on the node's loop (it reads the node's links). Never contains the cookie,
TLS keys or any other secret: names, addresses, times, metadata and counters.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from skycluster._version import __version__

if TYPE_CHECKING:
    from skycluster.distribution.node import Node


def node_status(node: Node) -> dict[str, Any]:
    """``{"node", "address", "hidden", "metadata", "started", "version", "node_loop", "own_thread",
    "busy_wait", "min_nodes", "ready", "peers": [{"node", "address", "since", "rtt",
    "last_heard", "metadata", "direction", "links"}], "hidden_peers", "erlang_peers": [{"node",
    "protocol", "address", "since", "last_heard", "direction", "hidden", "ticktime"}],
    "unlinked_pairs", "backing_off", "flapping", "removed"}``; times are Unix seconds, rtt,
    last_heard, busy_wait and ticktime seconds. ``erlang_peers`` are the links of the node's
    second protocol (Erlang distribution, ``erlang=True``), hidden ones included and marked."""
    now = time.monotonic()
    view = node.decider.connectivity() if node.decider is not None else {}
    linked_to: dict[str, list[str]] = view.get("links", {})
    second = node.second_protocol
    peers: list[dict[str, Any]] = []
    hidden = 0
    for ident, link in sorted(node.links.items()):
        peer = link.peer
        if peer is None:
            continue
        if peer.hidden:
            hidden += 1
            continue
        peers.append(
            {
                "node": ident,
                "address": peer.address,
                "since": link.since,
                "rtt": link.rtt,
                "last_heard": max(0.0, now - link.last_received),
                "metadata": dict(peer.metadata),
                "direction": "out" if link.initiator else "in",
                # the nodes it says it is linked to (its peer list), when known
                "links": linked_to.get(ident, []),
            }
        )
    return {
        "node": node.identity,
        "address": node.introduction.address,
        "hidden": node.settings.hidden,
        "metadata": dict(node.settings.metadata),
        "started": node.started,
        "version": __version__,
        "node_loop": "uvloop" if type(node.loop).__module__.startswith("uvloop") else "asyncio",
        "own_thread": not node.settings.shared_loop,
        "busy_wait": node.settings.busy_wait,
        "min_nodes": node.settings.min_nodes,
        "ready": len(peers) >= node.settings.min_nodes,
        "peers": peers,
        "hidden_peers": hidden,
        "erlang_peers": [] if second is None else second.links_status(),
        # pairs that should be linked and are not, as the peer lists say (this node
        # to a node a peer lists, or two peers whose lists lack each other)
        "unlinked_pairs": view.get("unlinked_pairs", 0),
        "backing_off": view.get("backing_off", 0),  # mesh targets whose dials failed
        # peers whose links went down soon after coming up: {node: flaps in a row}
        "flapping": view.get("flapping", {}),
        "removed": view.get("removed", []),  # [{topology, node}]: strategies' removals
    }
