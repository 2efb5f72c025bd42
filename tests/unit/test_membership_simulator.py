"""The membership core under the deterministic simulator: virtual time, simulated
network and processes. A failing seed names itself; ``python benchmarks/simulate.py
seeds --seed N --nodes 5 --duration 30 --faults 6`` replays it."""

from __future__ import annotations

import pytest

from skycluster.membership import MembershipSettings
from skycluster.membership.simulator import Simulation, Violation, chaos, time_to_mesh

SEEDS = 300


def test_random_faults_over_many_seeds() -> None:
    """Kills, restarts, SIGSTOPs, loop stalls, partitions (both kinds), loss, pods
    terminating (and restarted at once, discovering nobody) or ready again; the
    invariants hold at every step and the mesh is whole after the heal."""
    failed = []
    for seed in range(SEEDS):
        try:
            chaos(seed, 5, duration=30.0, faults=6)
        except Violation as exc:
            failed.append(str(exc))
    assert not failed, "\n".join(failed[:5])


def test_a_seed_replays_exactly() -> None:
    a = chaos(4242, 6, duration=30.0, faults=8)
    b = chaos(4242, 6, duration=30.0, faults=8)
    assert (a.faults, a.events, a.node_downs) == (b.faults, b.events, b.node_downs)


def test_formation_from_one_seed_node_then_idle_costs_a_tick_per_link_per_interval() -> None:
    n = 40
    sim = Simulation(7, n, strategy="seed")
    took = time_to_mesh(sim, 60.0)
    assert took is not None and took < 30.0
    sim.run_until(sim.now + 3.0)
    downs = sim.counters.node_downs
    per_node = sim.idle_frames(10.0)
    interval = sim.settings.heartbeat_interval
    # one tick per idle link per interval, one way: n - 1 frames a second, no round trips
    assert per_node <= (n - 1) / interval * 1.02
    assert sim.counters.node_downs == downs
    sim.check_converged()


@pytest.mark.parametrize("seed", range(20))
def test_a_terminating_node_restarted_at_once_is_not_linked_again(seed: int) -> None:
    """Issue 14's defect: every member removes a terminating pod; its process is
    restarted at the same address right after, with a strategy that discovers
    nobody; members still holding stale peer lists must not link it again."""
    sim = Simulation(seed, 5, poll_interval=5.0)
    assert time_to_mesh(sim, 30.0) is not None
    x = "n4@sim"
    sim.terminate(x)
    sim.at(sim.now + 0.3 + 0.4 * sim.rng.random(), sim.restart, x, "none")
    sim.run_until(sim.now + 40.0)
    for proc in sim.live():
        if proc.ident != x:
            assert x not in proc.core.by_ident, f"seed {seed}: {proc.ident} linked {x} again"
    sim.check_converged()
    sim.admit(x)  # the pod is ready again: the strategies list it, the tombstone lifts
    sim.restart(x, "k8s")
    assert time_to_mesh(sim, 30.0) is not None


@pytest.mark.parametrize("pause", [2.6, 2.7, 2.8, 2.9, 2.95])
@pytest.mark.parametrize("seed", range(4))
def test_a_pause_shorter_than_the_timeout_makes_the_paused_node_blame_nobody(
    pause: float, seed: int
) -> None:
    """Issue 15's defect: after SIGCONT the timer runs before the frames that waited
    are read; the node measured its stall and gives its peer the benefit of it."""
    sim = Simulation(seed, 2, strategy="seed")
    sim.node_settings["n1@sim"] = MembershipSettings(heartbeat_timeout=30.0)
    sim.node_settings["n0@sim"] = MembershipSettings()
    assert time_to_mesh(sim, 30.0) is not None
    sim.run_until(sim.now + 5.0 + sim.rng.random())
    sim.pause("n0@sim", pause)
    sim.run_until(sim.now + 20.0)
    assert sim.counters.node_downs == 0
    assert sim.procs["n0@sim"].core.counters.get("loop_stalls") >= 1


def test_a_triangle_that_cannot_close_backs_off_and_shows() -> None:
    """A and B cannot reach each other, both reach C: they dial each other less
    and less often, and each node counts the missing pair."""
    settings = MembershipSettings(retry_max=30.0)
    sim = Simulation(3, 3, strategy="seed", settings=settings)
    assert time_to_mesh(sim, 30.0) is not None
    a, b = "n1@sim", "n2@sim"
    sim.block(a, b)
    sim.block(b, a)
    sim.run_until(sim.now + 20.0)
    dials = sim.counters.dials
    sim.run_until(sim.now + 120.0)
    assert sim.counters.dials - dials <= 2 * (120 / 30 + 2)  # about one per retry_max each
    for ident in ("n0@sim", a, b):
        assert sim.procs[ident].core.unlinked_pairs == 1, ident
    assert sim.procs[a].core.connectivity()["backing_off"] == 1
    sim.heal()
    assert time_to_mesh(sim, settings.retry_max + 10.0) is not None


def test_core_state_stays_bounded_over_a_long_run_with_churn() -> None:
    sim = Simulation(11, 6, settings=MembershipSettings(max_tombstones=8))
    sim.run_until(10.0)
    for i in range(60):
        ident = f"n{1 + i % 5}@sim"
        if i % 3 == 0:
            sim.restart(ident)
        elif i % 3 == 1:
            sim.terminate(ident)
        else:
            sim.admit(ident)
            sim.restart(ident)
        sim.run_until(sim.now + 5.0)
        sim.check_bounded()
    for ident in sim.idents:
        sim.admit(ident)
    sim.run_until(sim.now + 20.0)
    sim.check_converged()
