"""The membership core on its own: time is a number the test passes."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from skycluster.membership import Membership, MembershipSettings
from skycluster.membership.actions import (
    CloseLink,
    Dial,
    LinkFlapped,
    LinkSteady,
    LoopStalled,
    PublishDown,
    PublishUp,
    RequestPeers,
    SendPeers,
    SendTick,
)
from skycluster.membership.flaps import Flaps
from skycluster.membership.names import NameTable, indices
from skycluster.membership.peerlists import OwnList, PeerLists, PeerListUpdate
from skycluster.membership.tombstones import Tombstones

ME = "a@h"


def core(**overrides: object) -> Membership:
    return Membership(ME, MembershipSettings(**overrides), random=lambda: 0.0)  # type: ignore[arg-type]


def kinds(actions: list[object]) -> list[str]:
    return [type(a).__name__ for a in actions]


def linked(c: Membership, link: int, ident: str, now: float = 0.0, creation: int = 1) -> None:
    assert c.link_up(now, link, ident, f"{ident}:4370", creation)
    c.take()


def full(c: Membership, idents: list[str], version: int = 0) -> PeerListUpdate:
    return PeerListUpdate(version, version, True, c.table.mask(idents), 0)


# -- heartbeats -------------------------------------------------------------------


def ticks(c: Membership) -> list[int]:
    return [a.link for a in c.take() if isinstance(a, SendTick)]


def test_idle_links_tick_together_on_the_grid_and_a_busy_one_not_at_all() -> None:
    c = core(tick_phase=0.3)  # grid instants 0.3, 1.3, 2.3, ...
    linked(c, 1, "b@h", now=0.0)
    linked(c, 2, "c@h", now=0.6)
    for t in (0.3, 0.6, 1.0):  # link 1 sent its handshake less than half an interval ago
        c.tick(t)
        assert ticks(c) == []
    c.heard(1, 1.2)
    c.heard(2, 1.2)
    c.tick(1.3)  # both in one pass, though they came up 0.6 s apart
    assert ticks(c) == [1, 2]
    c.sent(2, 1.9)  # link 2 carried a frame less than half an interval before 2.3
    c.heard(1, 2.2)
    c.heard(2, 2.2)
    c.tick(2.3)
    assert ticks(c) == [1]
    c.heard(1, 3.2)
    c.heard(2, 3.2)
    c.tick(3.3)  # 1.4 s after link 2's frame: never more than 1.5 intervals apart
    assert ticks(c) == [1, 2]


def test_with_a_short_timeout_a_frame_spares_a_tick_only_if_sent_just_before() -> None:
    c = core(heartbeat_interval=1.0, heartbeat_timeout=1.2)
    linked(c, 1, "b@h", now=0.0)
    c.sent(1, 0.85)  # 0.15 s before the grid instant: more than (1.2 - 1.0) / 2
    c.heard(1, 0.9)
    c.tick(1.0)
    assert ticks(c) == [1]
    c.sent(1, 1.95)
    c.heard(1, 1.9)
    c.tick(2.0)
    assert ticks(c) == []  # its next frame, at 3.0, is 1.05 s after it: within 1.2


def test_peer_lists_go_out_on_the_grid_with_the_ticks() -> None:
    c = core(tick_phase=0.3)
    linked(c, 1, "b@h", now=0.0)
    c.tick(0.05)  # the first pass, whenever it comes
    assert [a.link for a in c.take() if isinstance(a, SendPeers)] == [1]
    linked(c, 2, "c@h", now=0.1)
    c.tick(0.3)  # then on the grid
    assert [a.link for a in c.take() if isinstance(a, SendPeers)] == [1, 2]
    linked(c, 3, "d@h", now=0.4)
    for t in (0.55, 0.8, 1.05, 1.299):  # off the grid (1.299: a timer a hair early is on it)
        for link in (1, 2, 3):
            c.heard(link, t)
        c.tick(t)
        sent = [a.link for a in c.take() if isinstance(a, SendPeers)]
        assert sent == ([1, 2, 3] if t > 1.29 else []), t


def test_a_timer_that_fires_a_little_early_still_ticks_on_that_grid_instant() -> None:
    c = core()
    linked(c, 1, "b@h", now=0.1)
    c.heard(1, 0.9)
    c.tick(0.999)  # a loop that rounds its timers to milliseconds
    assert ticks(c) == [1]
    assert c.next_wakeup(0.999) == 1.25  # the next step of the grid, not 1.0 again


def test_the_timer_wakes_on_the_grid_at_least_every_step() -> None:
    c = core(tick_phase=0.1)
    assert c.settings.step == 0.25
    assert c.next_wakeup(0.0) == 0.1
    assert abs(c.next_wakeup(0.1) - 0.35) < 1e-9
    assert abs(c.next_wakeup(0.37) - 0.6) < 1e-9
    assert core(heartbeat_interval=1.0, heartbeat_timeout=0.5).settings.step == 0.125


def test_silence_longer_than_the_timeout_closes_the_link_and_reports_it_down_once() -> None:
    c = core()
    linked(c, 1, "b@h")
    for t in (1.0, 2.0, 3.0):
        c.tick(t)
    assert not [a for a in c.take() if isinstance(a, CloseLink)]
    c.tick(3.01)
    actions = c.take()
    close = [a for a in actions if isinstance(a, CloseLink)]
    assert close and close[0].reason == "heartbeat_timeout" and close[0].silence > 3.0
    downs = [a for a in actions if isinstance(a, PublishDown)]
    assert [(d.ident, d.reason) for d in downs] == [("b@h", "heartbeat_timeout")]
    c.link_down(3.02, 1, "connection_closed")  # the socket closes afterwards: no second down
    assert not [a for a in c.take() if isinstance(a, PublishDown)]


def test_any_frame_received_proves_the_peer_alive() -> None:
    c = core()
    linked(c, 1, "b@h")
    for t in range(1, 20):
        c.heard(1, t - 0.5)
        c.tick(float(t))
    assert "CloseLink" not in kinds(c.take())


def test_a_node_that_measured_its_own_stall_gives_peers_the_benefit_of_it() -> None:
    # SIGSTOP for 2.9 s: the peer's frames wait unread in the socket, and after
    # SIGCONT the timer runs before they are read (issue 15's defect).
    c = core()
    linked(c, 1, "b@h")
    c.heard(1, 0.9)
    c.tick(1.0)
    c.take()
    c.tick(1.0 + 2.9 + 0.1, lag=2.9)  # woke 2.9 s late; the last frame read is 3.1 s old
    actions = c.take()
    assert any(isinstance(a, LoopStalled) for a in actions)
    assert not any(isinstance(a, CloseLink) for a in actions)
    c.heard(1, 4.01)  # now the waiting frames are read
    c.tick(4.2)
    assert "CloseLink" not in kinds(c.take())


def test_the_stall_credit_expires() -> None:
    c = core()
    linked(c, 1, "b@h")
    c.tick(1.0, lag=1.0)
    c.heard(1, 1.0)
    c.take()
    c.tick(20.0)
    assert "CloseLink" in kinds(c.take())


def test_a_paused_reader_is_not_a_silent_peer() -> None:
    c = core()
    linked(c, 1, "b@h")
    c.reading_paused(1, True, 0.5)
    for t in range(1, 15):
        c.tick(float(t))
    assert "CloseLink" not in kinds(c.take())


def test_next_wakeup_is_never_later_than_a_step() -> None:
    c = core()
    assert c.next_wakeup(10.0) == 10.0 + c.settings.step
    linked(c, 1, "b@h", now=10.0)
    assert c.next_wakeup(10.0) <= 10.0 + c.settings.step


# -- which link wins --------------------------------------------------------------


def test_admission_one_link_per_pair() -> None:
    c = core()
    assert c.admit(0, ME, 5) == "name"
    assert c.admit(0, "b@h", 5) is None
    assert c.admit(0, "b@h", 5) == "alive"  # the same incarnation is being accepted
    linked(c, 1, "b@h", creation=5)
    assert c.admit(0, "b@h", 5) == "alive"
    c.connect(0, "z@h", "z@h:1")  # we dial z and a@h < z@h: our dial wins
    assert c.admit(0, "z@h", 1) == "simultaneous"
    c.connect(0, "0@h", "0@h:1")  # we dial 0@h but 0@h < a@h: its dial wins
    assert c.admit(0, "0@h", 1) is None


def test_a_new_incarnation_replaces_the_old_link() -> None:
    c = core()
    linked(c, 1, "b@h", creation=1)
    assert not c.link_up(1.0, 2, "b@h", "b@h:1", 1)  # duplicate
    assert c.link_up(1.0, 3, "b@h", "b@h:1", 2)
    actions = c.take()
    assert [(type(a).__name__, getattr(a, "link", None)) for a in actions[:3]] == [
        ("CloseLink", 1),
        ("PublishDown", 1),
        ("PublishUp", 3),
    ]
    c.link_down(1.1, 1, "connection_closed")  # the old socket closes: nothing more
    assert not [a for a in c.take() if isinstance(a, PublishDown)]


def test_hidden_peers_are_linked_but_not_reported_or_listed() -> None:
    c = core()
    assert c.link_up(0, 1, "cli@h", "cli@h", 1, hidden=True)
    linked(c, 2, "b@h")
    assert not [a for a in c.take() if isinstance(a, PublishUp)]
    assert c.linked() == ["b@h"]
    c.tick(1.0)
    sent = [a for a in c.take() if isinstance(a, SendPeers)]
    assert [s.link for s in sent] == [2]
    assert c.table.idents(sent[0].update.added) == ["b@h"]


# -- peer lists and the mesh --------------------------------------------------------


def test_a_new_link_gets_the_whole_list_then_only_changes() -> None:
    c = core()
    linked(c, 1, "b@h")
    c.tick(1.0)
    first = [a for a in c.take() if isinstance(a, SendPeers)]
    assert len(first) == 1 and not first[0].update.full
    assert c.link_up(1.5, 2, "c@h", "c@h:1", 1)
    snapshot = [a for a in c.take() if isinstance(a, SendPeers)]
    assert snapshot[0].link == 2 and snapshot[0].update.full
    c.tick(2.0)
    changes = [a for a in c.take() if isinstance(a, SendPeers)]
    assert {a.link for a in changes} == {1, 2}
    update = changes[0].update
    assert not update.full and c.table.idents(update.added) == ["c@h"]
    assert update.base == snapshot[0].update.version
    c.tick(3.0)
    assert not [a for a in c.take() if isinstance(a, SendPeers)]  # no change: nothing


def test_the_mesh_dials_what_peers_list() -> None:
    c = core()
    linked(c, 1, "b@h")
    c.peers_received(0.1, 1, full(c, ["b@h", ME, "c@h"]))
    dials = [a for a in c.take() if isinstance(a, Dial)]
    assert [(d.ident, d.name) for d in dials] == [("c@h", "c@h")]


def test_a_change_that_does_not_follow_asks_for_the_whole_list() -> None:
    c = core()
    linked(c, 1, "b@h")
    c.peers_received(0.1, 1, full(c, ["b@h"], version=3))
    gap = PeerListUpdate(5, 4, False, c.table.mask(["d@h"]), 0)  # 4 -> 5, but we hold 3
    c.peers_received(0.2, 1, gap)
    actions = c.take()
    assert [a.link for a in actions if isinstance(a, RequestPeers)] == [1]
    assert not [a for a in actions if isinstance(a, Dial)]
    c.peers_received(0.3, 1, gap)  # asked once only
    assert not [a for a in c.take() if isinstance(a, RequestPeers)]
    c.peers_received(0.4, 1, full(c, ["b@h", "d@h"], version=5))
    assert [a.ident for a in c.take() if isinstance(a, Dial)] == ["d@h"]


def test_a_failed_mesh_dial_is_retried_with_growing_waits_while_listed() -> None:
    c = core(retry_initial=0.5, retry_max=4.0)
    linked(c, 1, "b@h")
    c.peers_received(0.0, 1, full(c, ["c@h"]))
    dial_times = []
    now = 0.0
    while now < 30:
        for a in c.take():
            if isinstance(a, Dial):
                dial_times.append(now)
                c.dial_ended(now, a.ident, linked=False)
        now = round(now + 0.1, 3)
        c.heard(1, now)
        c.tick(now)
    gaps = [b - a for a, b in itertools.pairwise(dial_times)]
    # retries are looked at once per mesh period: waits of 0.5, 1, 2, 4, 4... s
    assert gaps[0] <= 1.1 + 1e-9 and gaps[-1] >= 4.0 - 1e-9
    assert max(gaps) <= 4.0 + 1.0 + 1e-9
    assert c.connectivity()["backing_off"] == 1
    # no live peer lists c@h any more: no more dials, no record left
    c.peers_received(now, 1, PeerListUpdate(1, 0, False, 0, c.table.mask(["c@h"])))
    for _ in range(50):
        now += 0.1
        c.heard(1, now)
        c.tick(now)
    assert not [a for a in c.take() if isinstance(a, Dial)]
    assert c.sizes()["retries"] == 0


def test_mesh_dials_are_limited_in_flight() -> None:
    c = core(max_mesh_dials=3)
    linked(c, 1, "b@h")
    names = [f"n{i}@h" for i in range(10)]
    c.peers_received(0.0, 1, full(c, names))
    dials = [a.ident for a in c.take() if isinstance(a, Dial)]
    assert len(dials) == 3
    c.dial_ended(0.1, dials[0], linked=False)
    assert len([a for a in c.take() if isinstance(a, Dial)]) == 1


def test_a_link_that_flaps_is_dialled_again_later_each_time() -> None:
    c = core(retry_initial=0.5, retry_max=30.0, stable_after=30.0)
    linked(c, 1, "b@h")
    c.peers_received(0.0, 1, full(c, ["c@h"]))
    c.take()
    holds = []
    now = 0.0
    link = 10
    for _ in range(4):
        link += 1
        c.dial_ended(now, "c@h", linked=True)
        assert c.link_up(now, link, "c@h", "c@h", link)
        c.link_down(now + 1.0, link, "connection_closed")
        now += 1.0
        c.take()
        retry = c.mesh.retries["c@h"]
        holds.append(retry.due - now)
        c.dialling["c@h"] = True  # as if the mesh dialled it again
    assert holds == sorted(holds) and holds[-1] > holds[0]


def test_a_flapping_peer_is_counted_every_time_and_reported_once_until_steady() -> None:
    c = core(stable_after=30.0)
    flapped: list[LinkFlapped] = []
    now = 0.0
    for link in range(1, 5):  # up for 2 s, then down: a flap each time
        assert c.link_up(now, link, "b@h", "b@h", link)
        now += 2.0
        if link % 2:
            c.link_down(now, link, "connection_closed")
        else:  # silent: the heartbeat verdict closes it (the 2 s count from its last frame)
            c.heard(link, now - 3.5)
            c.tick(now)
        flapped += [a for a in c.take() if isinstance(a, LinkFlapped)]
    assert [(f.flaps, f.reason) for f in flapped] == [
        (1, "connection_closed"),
        (2, "heartbeat_timeout"),
        (3, "connection_closed"),
        (4, "heartbeat_timeout"),
    ]
    assert all(f.ident == "b@h" and f.lasted < 30.0 for f in flapped)
    assert [f.retry_in for f in flapped] == sorted(f.retry_in for f in flapped)
    assert c.counters.get("link_flaps") == 4
    assert c.connectivity()["flapping"] == {"b@h": 4}
    # the link holds for stable_after: steady again, said once, forgotten
    assert c.link_up(now, 9, "b@h", "b@h", 9)
    steady = []
    while now < 40.0:
        now += 0.5
        c.heard(9, now)
        c.tick(now)
        steady += [a for a in c.take() if isinstance(a, LinkSteady)]
    assert steady == [LinkSteady("b@h", 4)]
    assert c.connectivity()["flapping"] == {}
    # a long-lived link that goes down is no flap; a later short one starts a new run
    c.link_down(now, 9, "connection_closed")
    assert not [a for a in c.take() if isinstance(a, LinkFlapped)]
    assert c.link_up(now, 10, "b@h", "b@h", 10)
    c.link_down(now + 1.0, 10, "connection_closed")
    assert [a.flaps for a in c.take() if isinstance(a, LinkFlapped)] == [1]


def test_hidden_links_disconnects_and_goodbyes_are_no_flaps() -> None:
    c = core()
    assert c.link_up(0.0, 1, "tool@h", "tool@h", 1, hidden=True)
    c.link_down(1.0, 1, "connection_closed")
    linked(c, 2, "b@h", now=1.0)
    assert c.disconnect(2.0, "b@h")
    linked(c, 3, "x@h", now=2.0)
    assert c.disconnect(3.0, "x@h", "k8s")
    linked(c, 4, "c@h", now=3.0)
    c.link_down(4.0, 4, "shutdown")  # a goodbye: the peer stopped
    assert not [a for a in c.take() if isinstance(a, LinkFlapped)]
    assert c.counters.get("link_flaps") == 0


def test_flapping_peers_are_bounded_oldest_flap_first() -> None:
    f = Flaps(stable_after=30.0, limit=2)
    for i, ident in enumerate(["a@h", "b@h", "c@h"]):
        assert f.went_down(ident, float(i), lasted=1.0) == 1
    assert f.counts() == {"b@h": 1, "c@h": 1}
    assert f.went_down("b@h", 5.0, lasted=1.0) == 2  # b flapped last now: a new one drops c
    assert f.went_down("d@h", 6.0, lasted=1.0) == 1
    assert f.counts() == {"b@h": 2, "d@h": 1}


# -- removals (tombstones) --------------------------------------------------------


def test_a_node_a_strategy_removed_is_not_linked_again_by_the_mesh() -> None:
    c = core()
    linked(c, 1, "b@h")
    linked(c, 2, "x@h")
    c.peers_received(0.0, 1, full(c, ["x@h"]))
    assert c.disconnect(1.0, "x@h", "k8s")
    actions = c.take()
    assert [(a.reason) for a in actions if isinstance(a, CloseLink)] == ["disconnect"]
    assert [(a.reason) for a in actions if isinstance(a, PublishDown)] == ["disconnect"]
    # b still lists x (stale list) and the mesh runs: no dial, its handshake refused
    for t in range(2, 40):
        c.heard(1, float(t))
        c.tick(float(t))
    assert not [a for a in c.take() if isinstance(a, Dial)]
    assert c.admit(40.0, "x@h", 7) == "removed"
    assert c.connectivity()["removed"] == [{"topology": "k8s", "node": "x@h"}]
    # the strategy lists it again: linked at once
    assert c.connect(41.0, "x@h", "x@h:1", "k8s")
    assert [a.ident for a in c.take() if isinstance(a, Dial)] == ["x@h"]
    assert "x@h" not in c.tombstones


def test_another_topology_may_still_link_a_removed_node() -> None:
    c = core()
    c.disconnect(0.0, "x@h", "k8s")
    assert c.connect(1.0, "x@h", "x@h", "dns")
    assert "x@h" in c.tombstones  # k8s still excludes it from the mesh


def test_an_application_disconnect_leaves_no_tombstone() -> None:
    c = core()
    linked(c, 1, "x@h")
    assert c.disconnect(0.5, "x@h")
    assert "x@h" not in c.tombstones
    assert not c.disconnect(0.6, "x@h")


def test_tombstones_are_bounded_oldest_first() -> None:
    t = Tombstones(limit=3)
    for i in range(5):
        t.bury("k8s", f"n{i}@h", float(i))
    assert len(t) == 3 and "n0@h" not in t and "n4@h" in t
    t.bury("dns", "n4@h", 9.0)
    assert t.lift("k8s", "n4@h") and "n4@h" in t  # dns still removes it
    assert t.lift("dns", "n4@h") and "n4@h" not in t
    assert not t.lift("dns", "n4@h")


# -- partial connectivity -----------------------------------------------------------


def test_pairs_that_should_be_linked_and_are_not_are_counted() -> None:
    c = core()
    linked(c, 1, "b@h")
    linked(c, 2, "c@h")
    c.peers_received(0.0, 1, full(c, [ME, "c@h"]))
    c.peers_received(0.0, 2, full(c, [ME, "b@h"]))
    c.tick(1.0)
    assert c.unlinked_pairs == 0
    # b loses c (an asymmetric partition): both say so
    c.peers_received(1.5, 1, PeerListUpdate(1, 0, False, 0, c.table.mask(["c@h"])))
    c.peers_received(1.5, 2, PeerListUpdate(1, 0, False, 0, c.table.mask(["b@h"])))
    c.tick(2.0)
    assert c.unlinked_pairs == 1
    view = c.connectivity()
    assert view["links"] == {"b@h": [ME], "c@h": [ME]}
    # a node a peer lists and we cannot reach counts too
    c.peers_received(2.5, 1, PeerListUpdate(2, 1, False, c.table.mask(["d@h"]), 0))
    c.take()
    c.tick(3.0)
    assert c.unlinked_pairs == 2


# -- names ------------------------------------------------------------------------


def test_names_that_came_and_went_are_forgotten_and_their_indices_reused() -> None:
    c = core()
    linked(c, 1, "b@h")
    c.disconnect(0.0, "gone@h", "k8s")  # a strategy removed it: kept (tombstone)
    c.connect(0.0, "wanted@h", "wanted@h:7", "k8s")  # a strategy wants it: kept
    now = 0.0
    for round_ in range(40):  # b's peers come and go: 50 new names each time
        names = [f"p{round_}-{i}@h" for i in range(50)]
        c.peers_received(now, 1, full(c, names, version=round_))
        now += 1.0
        c.heard(1, now)
        c.tick(now)
        while dials := [a for a in c.take() if isinstance(a, Dial) and a.ident != "wanted@h"]:
            for dial in dials:  # every mesh dial fails
                c.dial_ended(now, dial.ident, linked=False)
        assert len(c.table) <= 2 * 256 + 50  # bounded: about twice the names in use
    assert c.counters.get("names_forgotten") > 1000
    kept = {"a@h", "b@h", "wanted@h"} | {f"p39-{i}@h" for i in range(50)}
    assert [ident for ident in kept if c.table.find(ident) is None] == []
    assert c.table.find("p0-0@h") is None
    assert c.table.dial_name(c.table.index("wanted@h")) == "wanted@h:7"
    # masks read back the names they were made of, indices reused or not
    assert c.connectivity()["links"]["b@h"] == sorted(f"p39-{i}@h" for i in range(50))
    assert c.admit(now, "gone@h", 3) == "removed"


def test_a_shared_table_is_never_swept() -> None:
    table = NameTable()
    c = Membership(ME, MembershipSettings(), table=table, random=lambda: 0.0)
    for i in range(600):
        table.index(f"n{i}@h")
    for t in range(1, 4):
        c.tick(float(t))
    assert len(table) == 601


def test_name_table_knows_each_name_by_its_latest_dial_text_until_it_forgets_it() -> None:
    t = NameTable()
    b = t.index("b@h", "b@h:4370")
    assert t.known_dial("b@h:4370") == b
    assert t.known_dial("b@h:4371") is None
    assert t.index("b@h", "b@h:4371") == b  # b came back on another port
    assert t.known_dial("b@h:4370") is None
    assert t.known_dial("b@h:4371") == b
    assert t.index("b@h") == b  # a name without a port keeps the port we know
    assert t.known_dial("b@h:4371") == b
    c = t.index("c@h")
    assert t.known_dial("c@h") == c
    t.retain(1 << c)
    assert t.known_dial("b@h:4371") is None
    assert t.index("d@h", "d@h:1") == b  # b's index, reused
    assert t.known_dial("d@h:1") == b


def test_name_table_reuses_the_lowest_free_index() -> None:
    t = NameTable()
    for ident in ("a", "b", "c", "d", "e"):
        t.index(ident, f"{ident}:1")
    assert t.retain(t.mask(["a", "d"])) == 3
    assert len(t) == 2 and t.find("b") is None and t.find("e") is None
    assert t.index("x") == 1 and t.dial_name(1) == "x"
    assert t.index("y") == 2 and t.index("z") == 4  # e's slot was trimmed from the end
    assert t.idents(t.mask(["a", "x", "y", "d", "z"])) == ["a", "x", "y", "d", "z"]


# -- pure pieces ------------------------------------------------------------------


@given(st.lists(st.integers(min_value=0, max_value=300), max_size=60))
def test_name_table_masks_round_trip(numbers: list[int]) -> None:
    table = NameTable()
    idents = [f"n{i}@h" for i in numbers]
    mask = table.mask(idents)
    assert sorted(table.idents(mask)) == sorted(set(idents))
    assert mask.bit_count() == len(set(idents))
    assert list(indices(mask)) == sorted(indices(mask))


@settings(max_examples=200)
@given(st.lists(st.sets(st.integers(min_value=0, max_value=40)), min_size=1, max_size=12))
def test_changes_applied_in_order_rebuild_the_sender_list(history: list[set[int]]) -> None:
    """Whatever the sender's list goes through, the receiver's copy (whole list at
    link-up, then changes) equals the sender's at every version."""
    table = NameTable()
    own = OwnList()
    lists = PeerLists()
    lists.add_peer("s@h")
    own.current = table.mask(f"n{i}@h" for i in history[0])
    own.commit()
    lists.apply("s@h", own.snapshot())
    for step in history[1:]:
        own.current = table.mask(f"n{i}@h" for i in step)
        update = own.commit()
        if update is not None:
            _, ask = lists.apply("s@h", update)
            assert not ask
        assert lists.mask_of("s@h") == own.current
        assert lists.union() == own.current


@settings(max_examples=200)
@given(
    st.lists(st.sets(st.integers(min_value=0, max_value=20)), min_size=2, max_size=8),
    st.randoms(use_true_random=False),
)
def test_lost_or_reordered_changes_are_noticed_and_repaired(
    history: list[set[int]], rnd: object
) -> None:
    import random as _random

    assert isinstance(rnd, _random.Random)
    table = NameTable()
    own = OwnList()
    lists = PeerLists()
    lists.add_peer("s@h")
    lists.apply("s@h", own.snapshot())
    updates = []
    for step in history:
        own.current = table.mask(f"n{i}@h" for i in step)
        update = own.commit()
        if update is not None:
            updates.append(update)
    delivered = [u for u in updates if rnd.random() < 0.7]
    rnd.shuffle(delivered)
    asked = False
    for update in delivered:
        _, ask = lists.apply("s@h", update)
        asked = asked or ask
    if lists.mask_of("s@h") != own.current:
        assert asked or lists.received["s@h"].awaiting_full or delivered != updates
        lists.apply("s@h", own.snapshot())  # what answering the request does
    assert lists.mask_of("s@h") == own.current


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["up", "down", "tick", "heard", "disconnect", "connect", "peers"]),
            st.integers(min_value=0, max_value=5),
            st.floats(min_value=0.0, max_value=2.0),
        ),
        max_size=80,
    )
)
def test_any_sequence_of_inputs_keeps_up_and_down_alternating(
    steps: list[tuple[str, int, float]],
) -> None:
    c = core()
    now = 0.0
    link_ids = 0
    links: dict[int, int] = {}  # node number -> link
    reported: dict[str, bool] = {}
    for what, who, dt in steps:
        now += dt
        ident = f"n{who}@h"
        if what == "up":
            link_ids += 1
            if c.link_up(now, link_ids, ident, ident, link_ids % 3):
                links[who] = link_ids
        elif what == "down" and who in links:
            c.link_down(now, links[who], "connection_closed")
        elif what == "tick":
            c.tick(now)
        elif what == "heard" and who in links:
            c.heard(links[who], now)
        elif what == "disconnect":
            c.disconnect(now, ident, "k8s")
        elif what == "connect":
            c.connect(now, ident, ident, "k8s")
        elif what == "peers" and who in links:
            c.peers_received(now, links[who], full(c, [f"n{i}@h" for i in range(who)]))
        for action in c.take():
            if isinstance(action, PublishUp | PublishDown):
                up = isinstance(action, PublishUp)
                assert reported.get(action.ident, False) != up
                reported[action.ident] = up
                if up:
                    assert action.ident not in c.tombstones
    assert {i for i, up in reported.items() if up} == set(c.linked())
