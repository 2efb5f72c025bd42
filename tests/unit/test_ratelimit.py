from __future__ import annotations

import pytest

from skycluster import _ratelimit
from skycluster._ratelimit import RateLimit


def test_allows_a_burst_per_key_then_refuses() -> None:
    limit = RateLimit(burst=3, window=60)
    assert [limit.allow("a") for _ in range(5)] == [True, True, True, False, False]
    assert limit.allow("b") is True  # other causes are not affected


def test_a_new_window_allows_again(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(_ratelimit.time, "monotonic", lambda: now[0])
    limit = RateLimit(burst=1, window=10)
    assert limit.allow("a") and not limit.allow("a")
    now[0] += 10
    assert limit.allow("a")


def test_memory_stays_bounded_under_a_flood_of_keys() -> None:
    limit = RateLimit(burst=1, window=60, capacity=100)
    for i in range(10_000):
        limit.allow(i)
    assert len(limit._seen) <= 100
