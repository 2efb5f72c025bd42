"""Keep a repeated problem from flooding the log: a few lines per cause per minute."""

from __future__ import annotations

import time
from collections.abc import Hashable


class RateLimit:
    """``allow(key)`` is True for the first ``burst`` calls per key within ``window`` seconds."""

    def __init__(self, burst: int = 5, window: float = 60.0, capacity: int = 1024) -> None:
        self.burst = burst
        self.window = window
        self.capacity = capacity
        self._seen: dict[Hashable, tuple[float, int]] = {}

    def allow(self, key: Hashable) -> bool:
        now = time.monotonic()
        start, count = self._seen.get(key, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        if len(self._seen) >= self.capacity and key not in self._seen:
            self._seen.clear()  # a flood of distinct keys: forget, stay bounded
        self._seen[key] = (start, count + 1)
        return count < self.burst
