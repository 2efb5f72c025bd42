"""A node's counters: how often each thing happened, by name.

One object per node, owned by the node: the distribution layer (``links_up``,
``handshakes_failed``, ...), messaging (``direct_writes``, ...), the strategies
(``gossip_received``, ...) and the operations endpoint (``http_requests``, ...)
add to it; ``Cluster.stats()`` reads a copy.
"""

from __future__ import annotations


class Counters:
    """Named counts, zero until first added to.

    Added to on the node's thread; ``snapshot()`` may be called from any thread
    (copying a dict runs no Python code, so the GIL makes the copy whole).
    """

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def add(self, key: str, n: int = 1) -> None:
        self._counts[key] = self._counts.get(key, 0) + n

    def get(self, key: str) -> int:
        return self._counts.get(key, 0)

    def snapshot(self) -> dict[str, int]:
        """Every counter added to so far, as a new dict."""
        return dict(self._counts)

    def __repr__(self) -> str:
        return f"Counters({self._counts!r})"
