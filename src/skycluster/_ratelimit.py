"""Keep a repeated problem from flooding the log: a few lines per cause per window.

One helper for every log line that a peer, a packet or a retry loop can repeat
at will: the node's membership log, the gossip strategy, the messenger. A key
names the cause (``"socket"``, ``(host, claimed_name, reason)``, ...); each key
gets ``burst`` lines per ``window`` seconds, and the next line logged for it
says how many were held back. Memory stays bounded whatever the keys.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from typing import Any


class RateLimit:
    """``allow(key)`` is True for the first ``burst`` calls per key within ``window``
    seconds (``math.inf``: once per key); ``log()`` logs through it.

    At most ``capacity`` keys are remembered: a new key beyond that forgets the
    oldest one, which may then be logged again. ``clock`` gives seconds (monotonic).
    """

    __slots__ = ("_clock", "_seen", "burst", "capacity", "window")

    def __init__(
        self,
        burst: int = 1,
        window: float = 60.0,
        *,
        capacity: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or not window > 0 or capacity < 1:
            raise ValueError(
                f"a rate limit needs burst >= 1, window > 0 and capacity >= 1, got "
                f"burst={burst!r}, window={window!r}, capacity={capacity!r}"
            )
        self.burst = burst
        self.window = window
        self.capacity = capacity
        self._clock = clock
        self._seen: dict[Hashable, _Window] = {}

    def allow(self, key: Hashable) -> bool:
        return self._take(key) is not None

    def log(
        self,
        logger: logging.Logger,
        level: int,
        key: Hashable,
        message: str,
        *args: Any,
        **kwargs: Any,
    ) -> bool:
        """Log ``message % args`` unless ``key`` is over its limit; a line that follows
        refused ones ends with how many there were. True when it was logged."""
        held_back = self._take(key)
        if held_back is None:
            return False
        if held_back:
            message += f" [{held_back} more since the last report]"
        logger.log(level, message, *args, **kwargs)
        return True

    def _take(self, key: Hashable) -> int | None:
        """None when ``key`` is over its limit, else how many calls were refused
        since its last allowed one."""
        now = self._clock()
        window = self._seen.get(key)
        if window is None:
            if len(self._seen) >= self.capacity:
                del self._seen[next(iter(self._seen))]  # the key first seen longest ago
            window = self._seen[key] = _Window(now)
        elif now - window.start >= self.window:
            window.start, window.allowed = now, 0
        if window.allowed >= self.burst:
            window.refused += 1
            return None
        window.allowed += 1
        held_back, window.refused = window.refused, 0
        return held_back


class _Window:
    """One key's current window."""

    __slots__ = ("allowed", "refused", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.allowed = 0  # lines allowed since start
        self.refused = 0  # calls refused since the last allowed line
