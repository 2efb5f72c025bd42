from __future__ import annotations

import logging
import math

import pytest

from skycluster._ratelimit import RateLimit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_allows_a_burst_per_key_then_refuses() -> None:
    limit = RateLimit(burst=3, window=60)
    assert [limit.allow("a") for _ in range(5)] == [True, True, True, False, False]
    assert limit.allow("b") is True  # other causes are not affected


def test_a_new_window_allows_again() -> None:
    clock = Clock()
    limit = RateLimit(burst=1, window=10, clock=clock)
    assert limit.allow("a") and not limit.allow("a")
    clock.now += 9.9
    assert not limit.allow("a")
    clock.now += 0.1
    assert limit.allow("a")


def test_an_infinite_window_allows_once_per_key() -> None:
    clock = Clock()
    limit = RateLimit(burst=1, window=math.inf, clock=clock)
    assert limit.allow("a")
    clock.now += 1e9
    assert not limit.allow("a")
    assert limit.allow("b")


def test_memory_stays_bounded_under_a_flood_of_keys() -> None:
    limit = RateLimit(burst=1, window=60, capacity=100)
    for i in range(10_000):
        limit.allow(i)
    assert len(limit._seen) <= 100


def test_a_flood_of_keys_forgets_the_oldest_first() -> None:
    limit = RateLimit(burst=1, window=60, capacity=3)
    for key in "abc":
        limit.allow(key)
    limit.allow("d")  # forgets a
    assert not limit.allow("c")
    assert limit.allow("a")


def test_log_says_how_many_lines_were_held_back(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    limit = RateLimit(burst=1, window=10, clock=clock)
    log = logging.getLogger("skycluster.test-ratelimit")
    with caplog.at_level(logging.INFO, logger=log.name):
        assert limit.log(log, logging.WARNING, "k", "cannot open %s", "x")
        for _ in range(4):
            assert not limit.log(log, logging.WARNING, "k", "cannot open %s", "x")
        clock.now += 10
        assert limit.log(log, logging.ERROR, "k", "cannot open %s", "y")
        clock.now += 10
        assert limit.log(log, logging.WARNING, "k", "cannot open %s", "z")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "cannot open x"),
        (logging.ERROR, "cannot open y [4 more since the last report]"),
        (logging.WARNING, "cannot open z"),
    ]


def test_log_passes_keyword_arguments(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("skycluster.test-ratelimit")
    with caplog.at_level(logging.INFO, logger=log.name):
        RateLimit().log(log, logging.INFO, "k", "hello", extra={"skycluster": {"event": "e"}})
    assert caplog.records[0].skycluster == {"event": "e"}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("burst", "window", "capacity"), [(0, 1.0, 1), (1, 0.0, 1), (1, 1.0, 0), (1, math.nan, 1)]
)
def test_bad_settings_are_refused(burst: int, window: float, capacity: int) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        RateLimit(burst, window, capacity=capacity)
