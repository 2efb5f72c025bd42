"""``skycluster members``: a running node's membership view as text.

The command (:mod:`skycluster.cli`) links to the node as a *hidden* node (it is
not reported to anybody, publishes no event and takes no part in the mesh),
asks for its view with a STATUS request (see :mod:`skycluster.ops.remote`),
and prints it with :func:`table`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any


def table(status: Mapping[str, Any], now: float | None = None) -> str:
    """The view as a text table: the node itself first (marked ``*``), then its peers,
    each with what its peer list says (LINKS: linked to all the others, or whom it
    lacks), then the BEAM nodes linked over Erlang distribution (LINKS: ``erlang``
    or ``erlang hidden``, and the link's net_ticktime)."""
    now = time.time() if now is None else now
    rows = [("", "NODE", "ADDRESS", "SINCE", "RTT", "LINKS", "METADATA")]
    rows.append(
        (
            "*",
            str(status.get("node")),
            str(status.get("address") or "-"),
            _since(status.get("started"), now),
            "-",
            "-",
            _metadata(status.get("metadata")),
        )
    )
    members = {str(status.get("node"))} | {str(p.get("node")) for p in status.get("peers", [])}
    for peer in status.get("peers", []):
        rtt = peer.get("rtt")
        rows.append(
            (
                "",
                str(peer.get("node")),
                str(peer.get("address") or "-"),
                _since(peer.get("since"), now),
                "-" if rtt is None else f"{rtt * 1000:.2f} ms",
                _links(peer, members),
                _metadata(peer.get("metadata")),
            )
        )
    erlang = [p for p in status.get("erlang_peers", []) if isinstance(p, Mapping)]
    for peer in erlang:
        rows.append(
            (
                "",
                str(peer.get("node")),
                str(peer.get("address") or "-"),
                _since(peer.get("since"), now),
                "-",
                _erlang_link(peer),
                "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]  # fmt: skip
    peers = len(status.get("peers", []))
    ready = "ready" if status.get("ready") else f"not ready (min_nodes {status.get('min_nodes')})"
    summary = f"{peers} peer{'' if peers == 1 else 's'} linked to {status.get('node')}; {ready}"
    unlinked = status.get("unlinked_pairs") or 0
    if unlinked:
        pairs = (
            "1 pair should be linked and is not"
            if unlinked == 1
            else (f"{unlinked} pairs should be linked and are not")
        )
        summary += f"; {pairs}"
    if erlang:
        hidden = sum(1 for p in erlang if p.get("hidden"))
        summary += f"; {len(erlang)} Erlang link{'' if len(erlang) == 1 else 's'}"
        summary += f" ({hidden} hidden)" if hidden else ""
    lines.append(summary)
    return "\n".join(lines)


def _links(peer: Mapping[str, Any], members: set[str]) -> str:
    """What the peer's list says: "all" the other members, or the ones it lacks."""
    listed = peer.get("links")
    if not isinstance(listed, list):
        return "?"
    lacking = sorted(members - {str(peer.get("node"))} - {str(n) for n in listed})
    if not lacking:
        return "all"
    shown = ", ".join(lacking[:3]) + (f" +{len(lacking) - 3}" if len(lacking) > 3 else "")
    return f"lacks {shown}"


def _erlang_link(peer: Mapping[str, Any]) -> str:
    """An Erlang distribution link: hidden or not, and the net_ticktime it runs with."""
    kind = "erlang hidden" if peer.get("hidden") else "erlang"
    ticktime = peer.get("ticktime")
    return f"{kind}, ticktime {ticktime:g}s" if isinstance(ticktime, int | float) else kind


def _since(epoch: Any, now: float) -> str:
    if not isinstance(epoch, int | float) or not epoch:
        return "-"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))
    return f"{stamp} ({_age(now - epoch)})"


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _metadata(metadata: Any) -> str:
    if not isinstance(metadata, Mapping) or not metadata:
        return "-"
    return ",".join(
        f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in sorted(metadata.items())
    )
