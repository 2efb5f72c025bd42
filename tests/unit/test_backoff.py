from __future__ import annotations

import random

import pytest

from skycluster._backoff import Backoff


def delays(backoff: Backoff, n: int) -> list[float]:
    return [backoff.next() for _ in range(n)]


def test_doubles_from_initial_up_to_maximum() -> None:
    assert delays(Backoff(0.5, 5.0), 6) == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_factor() -> None:
    assert delays(Backoff(1.0, 100.0, factor=3.0), 4) == [1.0, 3.0, 9.0, 27.0]
    assert delays(Backoff(2.0, 100.0, factor=1.0), 3) == [2.0, 2.0, 2.0]  # a constant pause


def test_reset_starts_over() -> None:
    backoff = Backoff(1.0, 8.0)
    delays(backoff, 5)
    assert backoff.attempts == 5
    backoff.reset()
    assert backoff.attempts == 0
    assert delays(backoff, 3) == [1.0, 2.0, 4.0]


def test_initial_equal_to_maximum_is_constant() -> None:
    assert delays(Backoff(3.0, 3.0), 3) == [3.0, 3.0, 3.0]


def test_jitter_shortens_by_at_most_its_fraction() -> None:
    backoff = Backoff(1.0, 8.0, jitter=0.5, random=random.Random(7).random)
    bounds = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0]
    for bound in bounds:
        delay = backoff.next()
        assert bound * 0.5 < delay <= bound


def test_jitter_uses_the_given_random_source() -> None:
    draws = iter([0.0, 0.5, 0.999])
    backoff = Backoff(10.0, 10.0, jitter=0.2, random=lambda: next(draws))
    assert delays(backoff, 3) == pytest.approx([10.0, 9.0, 8.002])


def test_same_seed_same_delays() -> None:
    def run() -> list[float]:
        return delays(Backoff(0.1, 30.0, jitter=1.0, random=random.Random(42).random), 20)

    assert run() == run()


@pytest.mark.parametrize(
    ("initial", "maximum", "factor", "jitter"),
    [
        (0.0, 1.0, 2.0, 0.0),
        (-1.0, 1.0, 2.0, 0.0),
        (2.0, 1.0, 2.0, 0.0),
        (1.0, 2.0, 0.5, 0.0),
        (1.0, 2.0, 2.0, 1.5),
        (1.0, 2.0, 2.0, -0.1),
        (float("nan"), 2.0, 2.0, 0.0),
    ],
)
def test_bad_settings_are_refused(
    initial: float, maximum: float, factor: float, jitter: float
) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(initial, maximum, factor=factor, jitter=jitter)
