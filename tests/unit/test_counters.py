from __future__ import annotations

import threading

from skycluster._counters import Counters


def test_counts_start_at_zero_and_add_up() -> None:
    counters = Counters()
    assert counters.get("links_up") == 0
    counters.add("links_up")
    counters.add("links_up")
    counters.add("undecodable_messages", 5)
    assert counters.get("links_up") == 2
    assert counters.snapshot() == {"links_up": 2, "undecodable_messages": 5}


def test_a_counter_never_added_to_is_absent_from_the_snapshot() -> None:
    counters = Counters()
    counters.get("dial_failures")
    assert counters.snapshot() == {}


def test_a_snapshot_is_a_copy() -> None:
    counters = Counters()
    counters.add("a")
    snapshot = counters.snapshot()
    counters.add("a")
    snapshot["b"] = 1
    assert snapshot == {"a": 1, "b": 1}
    assert counters.snapshot() == {"a": 2}


def test_snapshots_from_another_thread_while_one_thread_adds() -> None:
    counters = Counters()
    done = threading.Event()
    seen: list[int] = []

    def read() -> None:
        while not done.is_set():
            seen.append(sum(counters.snapshot().values()))

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(20_000):
        counters.add(f"k{i % 500}")
    done.set()
    reader.join()
    assert counters.snapshot() == {f"k{i}": 40 for i in range(500)}
    assert seen == sorted(seen)  # each copy whole: totals only grow
