"""Exponential backoff: how long to wait before the next attempt.

Pure: no clock, no sleeping. ``next()`` returns the delay and the caller waits
it however it waits (``asyncio.sleep``, a due time compared with its own clock,
a simulator's virtual time), so the same object serves an asyncio driver and a
core without I/O.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable


class Backoff:
    """Delays ``initial``, ``initial * factor``, ... up to ``maximum``; ``reset()``
    starts over after a success.

    ``jitter`` (0 to 1) shortens each delay by a random fraction of up to ``jitter``
    of it, so that many waiters who failed together do not retry together; a
    jittered delay never exceeds ``maximum``. ``random`` returns a float in
    [0, 1): pass a seeded ``random.Random().random`` for repeatable delays.
    """

    __slots__ = ("_current", "_random", "attempts", "factor", "initial", "jitter", "maximum")

    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        factor: float = 2.0,
        jitter: float = 0.0,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(
                f"backoff needs 0 < initial <= maximum, got initial={initial!r}, "
                f"maximum={maximum!r}"
            )
        if not factor >= 1:
            raise ValueError(f"backoff factor must be at least 1, got {factor!r}")
        if not 0 <= jitter <= 1:
            raise ValueError(f"backoff jitter must be between 0 and 1, got {jitter!r}")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._random = random
        self._current = initial
        self.attempts = 0  # delays handed out since the last reset

    def next(self) -> float:
        """The delay before the next attempt; the one after it is ``factor`` times longer."""
        delay = self._current
        self._current = min(delay * self.factor, self.maximum)
        self.attempts += 1
        if self.jitter:
            delay *= 1.0 - self.jitter * self._random()
        return delay

    def reset(self) -> None:
        """Start again from ``initial`` (the thing waited for worked)."""
        self._current = self.initial
        self.attempts = 0

    def __repr__(self) -> str:
        return (
            f"Backoff(initial={self.initial}, maximum={self.maximum}, factor={self.factor}, "
            f"jitter={self.jitter}, next={self._current})"
        )
