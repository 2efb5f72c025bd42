"""The polling decision (skycluster.distribution.busypolicy), driven by a fake clock."""

from __future__ import annotations

import pytest

from skycluster.distribution import busypolicy
from skycluster.distribution.busypolicy import AFTER_READ, AFTER_WRITE, BusyPolicy

US = 1e-6
LIMIT = 200 * US


def ping_pong(policy: BusyPolicy, now: float, gap: float, rounds: int) -> tuple[float, bool]:
    """A callee's view of calls ``gap`` apart: a request read, its reply written at
    once, the next request ``gap`` later. Whether it polled after the last reply."""
    polls = False
    for _ in range(rounds):
        policy.traffic(now, AFTER_READ)
        now += 2 * US
        polls = policy.traffic(now, AFTER_WRITE)
        now += gap
    return now, polls


def test_off_never_polls() -> None:
    policy = BusyPolicy(0.0)
    _, polls = ping_pong(policy, 100.0, 30 * US, 50)
    assert not polls and policy.windows == [0.0, 0.0]


def test_an_idle_node_never_polls() -> None:
    policy = BusyPolicy(LIMIT)
    now = 100.0
    for _ in range(100):  # a heartbeat read every second, nothing else
        assert not policy.traffic(now, AFTER_READ)
        now += 1.0
    assert policy.windows == [0.0, 0.0]


def test_heartbeats_that_arrive_together_and_are_forgotten_never_make_it_poll() -> None:
    # 64 peers tick at the same moment, once a second: 64 reads microseconds apart.
    policy = BusyPolicy(LIMIT)
    now = 100.0
    for _ in range(10):
        for peer in range(64):
            policy.traffic(now + peer * 5 * US, AFTER_READ)
            policy.forget()  # the read carried only a heartbeat
        assert not policy.polling(now + 64 * 5 * US)
        now += 1.0
    assert policy.windows == [0.0, 0.0]


def test_forgetting_a_frame_leaves_what_was_learned_before_it() -> None:
    policy = BusyPolicy(LIMIT)
    now, _ = ping_pong(policy, 100.0, 60 * US, 5)
    windows, until = list(policy.windows), policy.until
    policy.traffic(now + 1.0, AFTER_READ)  # a heartbeat a second later
    policy.forget()
    assert policy.windows == windows and policy.until == until
    _, polls = ping_pong(policy, now, 60 * US, 1)  # the calls go on as before
    assert polls


def test_quick_traffic_makes_it_poll_long_enough_to_catch_the_next_frame() -> None:
    policy = BusyPolicy(LIMIT)
    now, polls = ping_pong(policy, 100.0, 60 * US, 5)
    assert polls
    assert policy.until - (now - 60 * US) >= 60 * US  # the next request comes within it
    assert policy.windows[AFTER_WRITE] <= LIMIT


def test_a_window_never_passes_the_limit() -> None:
    policy = BusyPolicy(LIMIT)
    ping_pong(policy, 100.0, 190 * US, 20)
    assert 0 < policy.windows[AFTER_WRITE] <= LIMIT


def test_gaps_longer_than_the_limit_shrink_the_window_to_nothing() -> None:
    policy = BusyPolicy(LIMIT)
    now, _ = ping_pong(policy, 100.0, 60 * US, 10)  # polling after replies
    now, polls = ping_pong(policy, now, 1e-3, 10)  # then one call every millisecond
    assert not polls and policy.windows[AFTER_WRITE] == 0.0


def test_a_caller_polls_for_its_replies_not_for_its_own_next_call() -> None:
    # One call every millisecond, round trip 80 µs: the write is followed by its
    # reply (worth polling for), the reply by a millisecond of silence (not).
    policy = BusyPolicy(LIMIT)
    now = 100.0
    for _ in range(10):
        wrote = policy.traffic(now, AFTER_WRITE)
        read = policy.traffic(now + 80 * US, AFTER_READ)
        now += 1e-3
    assert wrote and not read
    assert policy.windows[AFTER_WRITE] >= 80 * US and policy.windows[AFTER_READ] == 0.0


def test_polling_lasts_until_the_window_after_the_last_frame_passes() -> None:
    policy = BusyPolicy(LIMIT)
    now, _ = ping_pong(policy, 100.0, 60 * US, 5)
    last_write = now - 60 * US
    window = policy.windows[AFTER_WRITE]
    assert policy.polling(last_write + window / 2)
    assert not policy.polling(last_write + window + US)


def test_a_core_it_does_not_keep_stops_polling_for_a_back_off_without_a_timer() -> None:
    policy = BusyPolicy(LIMIT)
    now, _ = ping_pong(policy, 100.0, 60 * US, 5)
    policy.started(now, cpu=10.0, preempted=3)
    assert not policy.check_due(now + 0.5e-3)
    now += 4e-3  # 4 ms passed, 0.4 ms of it on the CPU, preempted: another process had it
    assert policy.check_due(now)
    assert not policy.check(now, cpu=10.0004, preempted=4)
    assert policy.backoffs == 1 and not policy.polling(now)
    # Within the back-off, traffic teaches the windows but starts no polling.
    _, polls = ping_pong(policy, now, 60 * US, 5)
    assert not polls and policy.windows[AFTER_WRITE] > 0
    # Once it has passed, polling resumes.
    _, polls = ping_pong(policy, now + busypolicy.FIRST_BACKOFF, 60 * US, 2)
    assert polls


def test_waiting_for_the_gil_is_not_contention() -> None:
    # Off the CPU most of the time but never preempted: the thread waited (for the
    # GIL, held by the node's thread of the same process); polling goes on.
    policy = BusyPolicy(LIMIT)
    now, _ = ping_pong(policy, 100.0, 60 * US, 5)
    policy.started(now, cpu=1.0, preempted=7)
    assert policy.check(now + 4e-3, cpu=1.0005, preempted=7)
    assert policy.backoffs == 0


def test_a_short_preemption_is_not_contention() -> None:
    policy = BusyPolicy(LIMIT)
    now, _ = ping_pong(policy, 100.0, 60 * US, 5)
    policy.started(now, cpu=1.0, preempted=0)
    # 2.2 ms, 2 ms of it on the CPU: a heartbeat of another process ran meanwhile
    assert policy.check(now + 2.2e-3, cpu=1.002, preempted=1)
    assert policy.backoffs == 0


def test_repeated_contention_doubles_the_back_off_up_to_a_bound_and_clean_checks_halve_it() -> (
    None
):
    policy = BusyPolicy(LIMIT)
    now, cpu, preempted = 100.0, 10.0, 0
    quiet = []
    for _ in range(12):
        policy.started(now, cpu, preempted)
        now += 4e-3
        preempted += 1
        assert not policy.check(now, cpu, preempted)  # preempted throughout
        quiet.append(policy._quiet_until - now)
        now = policy._quiet_until
    assert quiet[0] == pytest.approx(busypolicy.FIRST_BACKOFF)
    assert quiet[1] == pytest.approx(2 * busypolicy.FIRST_BACKOFF)
    assert max(quiet) == pytest.approx(busypolicy.MAX_BACKOFF)
    policy.started(now, cpu, preempted)
    for _ in range(10):  # on the CPU throughout: fine
        now += 4e-3
        cpu += 4e-3
        assert policy.check(now, cpu, preempted)
    assert not policy.check(now + 4e-3, cpu, preempted + 1)
    assert policy._quiet_until - (now + 4e-3) == pytest.approx(busypolicy.FIRST_BACKOFF)
