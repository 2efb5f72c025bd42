"""The process-level cores without I/O: pids for mailboxes, monitors, gen_server calls
both ways, erpc for exposed functions, pg, and bad input dropped. Against a real
erl: tests/integration/test_erlang_processes_with_erl.py."""

from __future__ import annotations

from typing import Any

import pytest
from erlang_strategies import pids, references, terms
from hypothesis import given, settings
from hypothesis import strategies as st

from skycluster.erlang import Atom, ImproperList, Pid, Reference
from skycluster.erlang.effects import Deliver, Dropped, Outgoing
from skycluster.erlang.erpc import Exposed
from skycluster.erlang.local import LocalProcesses
from skycluster.erlang.messages import WITH_PAYLOAD, Control, DistMessage, encode, reg_send, send
from skycluster.erlang.messages import decode as decode_message
from skycluster.erlang.processes import CallDone, CallFor, Processes, Run

PY = Atom("py@127.0.0.1")
ERL = Atom("erl@127.0.0.1")
CREATION = 77
THEM = Pid(ERL, 90, 0, 5)
REF = Reference(ERL, 5, (1, 2, 3))
NOPROC = Atom("noproc")


def wire(effects: list[Any]) -> list[Any]:
    """Each outgoing message through the encoder and decoder, as erl would read it."""
    out = []
    for effect in effects:
        if isinstance(effect, Outgoing):
            out.append(Outgoing(effect.node, decode_message(encode(effect.message)[4:])))
        else:
            out.append(effect)
    return out


def only(effects: list[Any]) -> Any:
    assert len(effects) == 1, effects
    return effects[0]


# -- pids -------------------------------------------------------------------------


def test_mailbox_pids_carry_the_node_and_its_creation() -> None:
    local = LocalProcesses(PY, CREATION)
    jobs = local.register(Atom("jobs"))
    assert jobs.node == PY and jobs.creation == CREATION and local.is_local(jobs)
    assert local.whereis(Atom("jobs")) == jobs and local.name_of(jobs) == Atom("jobs")
    assert local.spawn() != jobs
    with pytest.raises(ValueError, match="registered already"):
        local.register(Atom("jobs"))
    assert local.unregister(Atom("jobs")) == jobs
    assert local.resolve(jobs) is None and local.resolve(Atom("jobs")) is None
    again = local.register(Atom("jobs"))
    assert again != jobs  # a pid is never reused
    assert not local.is_local(Pid(PY, again.id, 0, CREATION + 1))
    refs = {local.make_ref() for _ in range(1000)}
    assert len(refs) == 1000 and all(r.creation == CREATION for r in refs)


def test_send_to_a_mailbox_pid_and_name_arrives_in_it() -> None:
    p = Processes(PY, CREATION)
    pid = p.mailbox_opened(Atom("jobs"))
    assert p.receive(ERL, send(pid, (1, 2))) == [Deliver(Atom("jobs"), (1, 2))]
    assert p.receive(ERL, reg_send(THEM, Atom("jobs"), b"x")) == [Deliver(Atom("jobs"), b"x")]
    p.mailbox_closed(Atom("jobs"))
    dropped = only(p.receive(ERL, send(pid, 1)))
    assert isinstance(dropped, Dropped) and dropped.counter == "erlang_messages_to_dead_pids"
    dropped = only(p.receive(ERL, reg_send(THEM, Atom("jobs"), 1)))
    assert dropped.counter == "erlang_messages_to_unknown_names"


def test_erlangs_own_names_are_no_mailboxes() -> None:
    p = Processes(PY, CREATION)
    scope = p.scopes[Atom("pg")]
    for name in (Atom("pg"), Atom("net_kernel")):
        with pytest.raises(ValueError, match="registered already"):
            p.mailbox_opened(name)
        assert p.mailbox_closed(name) == []
    assert p.local.whereis(Atom("pg")) == scope.pid


# -- monitors ---------------------------------------------------------------------


def monitor(watcher: Pid, target: Pid | Atom, ref: Reference) -> DistMessage:
    return DistMessage((int(Control.MONITOR_P), watcher, target, ref))


def test_monitor_by_pid_and_by_name_fire_when_the_mailbox_closes() -> None:
    p = Processes(PY, CREATION)
    pid = p.mailbox_opened(Atom("jobs"))
    by_name = Reference(ERL, 5, (1, 1, 1))
    assert p.receive(ERL, monitor(THEM, pid, REF)) == []
    assert p.receive(ERL, monitor(THEM, Atom("jobs"), by_name)) == []
    downs = wire(p.mailbox_closed(Atom("jobs")))
    assert {d.message.control for d in downs} == {
        (21, pid, THEM, REF, Atom("normal")),
        (21, Atom("jobs"), THEM, by_name, Atom("normal")),  # named as the watcher named it
    }
    assert all(d.node == ERL for d in downs) and len(p.monitors) == 0


def test_monitor_on_a_missing_name_is_noproc_at_once() -> None:
    p = Processes(PY, CREATION)
    (down,) = wire(p.receive(ERL, monitor(THEM, Atom("nobody"), REF)))
    assert down.node == ERL and down.message.control == (21, Atom("nobody"), THEM, REF, NOPROC)
    dead = p.local.spawn()
    p.local.exit(dead)
    (down,) = p.receive(ERL, monitor(THEM, dead, REF))
    assert down.message.control[4] == NOPROC


def test_demonitor_and_node_down_end_monitors() -> None:
    p = Processes(PY, CREATION)
    pid = p.mailbox_opened(Atom("jobs"))
    other = Pid(Atom("other@127.0.0.1"), 1, 0, 1)
    other_ref = Reference(other.node, 1, (9, 9, 9))
    p.receive(ERL, monitor(THEM, pid, REF))
    p.receive(other.node, monitor(other, pid, other_ref))
    p.receive(ERL, DistMessage((int(Control.DEMONITOR_P), THEM, pid, REF)))
    p.receive(ERL, DistMessage((int(Control.DEMONITOR_P), THEM, pid, REF)))  # twice: ignored
    assert len(p.monitors) == 1
    p.node_down(other.node)
    assert len(p.monitors) == 0 and p.mailbox_closed(Atom("jobs")) == []


def test_the_monitor_table_is_bounded() -> None:
    p = Processes(PY, CREATION)
    p.monitors._max = 10
    pid = p.mailbox_opened(Atom("jobs"))
    answers = [p.receive(ERL, monitor(THEM, pid, Reference(ERL, 5, (i, 0, 0)))) for i in range(12)]
    assert answers[:10] == [[]] * 10
    assert all(only(a).message.control[4] == NOPROC for a in answers[10:])


# -- gen_server:call from Erlang --------------------------------------------------


def test_a_gen_call_to_a_mailbox_is_a_call_and_its_reply_goes_to_the_caller() -> None:
    p = Processes(PY, CREATION)
    p.mailbox_opened(Atom("jobs"))
    tag = ImproperList((Atom("alias"),), REF)  # OTP 24+: [alias | Ref]
    got = only(p.receive(ERL, reg_send(THEM, Atom("jobs"), (Atom("$gen_call"), (THEM, tag), 21))))
    assert isinstance(got, CallFor) and got.name == Atom("jobs") and got.call.request == 21
    (answer,) = wire([p.reply(got.call, 42)])
    assert answer.node == ERL
    assert answer.message.control == (2, Atom(""), THEM) and answer.message.payload == (tag, 42)


def test_a_failed_answer_fires_only_the_callers_monitor() -> None:
    p = Processes(PY, CREATION)
    pid = p.mailbox_opened(Atom("jobs"))
    other = Reference(ERL, 5, (7, 7, 7))
    p.receive(ERL, monitor(THEM, Atom("jobs"), REF))  # the caller's, its tag's Mref
    p.receive(ERL, monitor(THEM, pid, other))  # someone else's, on the same mailbox
    tag = ImproperList((Atom("alias"),), REF)
    message = reg_send(THEM, Atom("jobs"), (Atom("$gen_call"), (THEM, tag), 1))
    (got,) = p.receive(ERL, message)
    (down,) = wire(p.call_failed(got.call, ValueError("bad")))
    why = (Atom("python"), b"ValueError", b"bad")
    assert down.message.control == (21, Atom("jobs"), THEM, REF, why)
    assert len(p.monitors) == 1 and p.call_failed(got.call, ValueError("again")) == []
    plain = reg_send(THEM, Atom("jobs"), (Atom("$gen_call"), (THEM, REF), 1))  # no alias tag
    (got,) = p.receive(ERL, plain)
    assert p.call_failed(got.call, ValueError("bad")) == []


# -- gen_server:call from Python --------------------------------------------------


def test_a_call_from_python_monitors_then_sends_and_the_reply_ends_it() -> None:
    p = Processes(PY, CREATION)
    ref, out = p.call(ERL, Atom("counter"), Atom("get"))
    mon, req = wire(out)
    caller = p.calls.caller
    assert mon.message.control == (19, caller, Atom("counter"), ref)
    assert req.message.control == (6, caller, Atom(""), Atom("counter"))
    assert req.message.payload == (Atom("$gen_call"), (caller, ref), Atom("get"))
    demon, done = p.receive(ERL, send(caller, (ref, 7)))
    assert isinstance(done, CallDone) and done.outcome.ok and done.outcome.value == 7
    assert demon.message.control == (20, caller, Atom("counter"), ref)
    assert p.receive(ERL, send(caller, (ref, 7))) == []  # late: nothing waits


def test_a_call_to_a_missing_name_fails_with_noproc() -> None:
    p = Processes(PY, CREATION)
    ref, _ = p.call(ERL, Atom("nobody"), 1)
    exit_ = DistMessage((int(Control.MONITOR_P_EXIT), Atom("nobody"), p.calls.caller, ref, NOPROC))
    done = only(p.receive(ERL, exit_))
    assert isinstance(done, CallDone) and done.outcome.reason == NOPROC


def test_calls_fail_when_their_node_goes_and_cancel_demonitors() -> None:
    p = Processes(PY, CREATION)
    ref, _ = p.call(ERL, Atom("slow"), 1)
    ref2, _ = p.call(ERL, Atom("slower"), 1)
    (demon,) = p.calls.cancel(ref2)
    assert demon.message.control[0] == 20 and p.calls.cancel(ref2) == []
    (done,) = p.node_down(ERL)
    assert isinstance(done, CallDone)
    assert done.outcome.ref == ref and done.outcome.reason == Atom("noconnection")


def test_a_call_to_a_pid_sends_to_it() -> None:
    p = Processes(PY, CREATION)
    _, (_, req) = p.call(PY, THEM, 1)
    assert req.node == ERL and req.message.control == (2, Atom(""), THEM)


# -- erpc -------------------------------------------------------------------------


def spawn_request(mfa: tuple[Any, ...], args: list[Any], opts: list[Any]) -> DistMessage:
    control = (int(Control.SPAWN_REQUEST), REF, THEM, THEM, mfa, opts)
    return DistMessage(control, args)


ERPC_CALL = (Atom("erpc"), Atom("execute_call"), 4)
ERPC_OPTS = [(Atom("reply"), Atom("error_only")), Atom("monitor")]


def test_erpc_call_of_an_exposed_function_returns_through_the_monitor() -> None:
    exposed = Exposed()
    exposed.expose("math", "add", lambda a, b: a + b)
    p = Processes(PY, CREATION, exposed=exposed)
    res = Reference(ERL, 5, (4, 4, 4))
    args = [res, Atom("math"), Atom("add"), [2, 40]]
    reply, run = p.receive(ERL, spawn_request(ERPC_CALL, args, ERPC_OPTS))
    assert isinstance(run, Run) and run.job.args == [2, 40]
    pid = run.job.pid
    assert reply.message.control == (31, REF, THEM, 2, pid)  # 2: the monitor is set up
    (down,) = wire(p.finished(run.job, run.job.fn(*run.job.args)))
    assert down.message.control == (21, pid, THEM, REF, (res, Atom("return"), 42))
    assert not p.local.is_alive(pid)


def test_erpc_of_anything_not_exposed_is_undef_and_other_spawns_notsup() -> None:
    p = Processes(PY, CREATION)
    res = Reference(ERL, 5, (4, 4, 4))
    args = [res, Atom("os"), Atom("cmd"), [[108, 115]]]
    reply, down = wire(p.receive(ERL, spawn_request(ERPC_CALL, args, ERPC_OPTS)))
    assert reply.message.control[3] == 2
    stack = [(Atom("os"), Atom("cmd"), [[108, 115]], [])]
    assert down.message.control[4] == (res, Atom("error"), Atom("undef"), stack)
    mfa = (Atom("os"), Atom("cmd"), 1)
    refused = only(p.receive(ERL, spawn_request(mfa, [[108, 115]], [Atom("monitor")])))
    assert refused.message.control == (31, REF, THEM, 0, Atom("notsup"))
    linked = only(p.receive(ERL, spawn_request(ERPC_CALL, args, [Atom("link")])))
    assert linked.message.control[4] == Atom("badopt")


def test_erpc_exceptions_and_unencodable_results_are_errors() -> None:
    exposed = Exposed()
    exposed.expose("m", "f", lambda: None)
    p = Processes(PY, CREATION, exposed=exposed)
    res = Reference(ERL, 5, (4, 4, 4))
    _, run = p.receive(ERL, spawn_request(ERPC_CALL, [res, Atom("m"), Atom("f"), []], ERPC_OPTS))
    (down,) = p.finished(run.job, exc=ValueError("bad"))
    why = (Atom("python"), b"ValueError", b"bad")
    assert down.message.control[4] == (res, Atom("error"), why, [(Atom("m"), Atom("f"), [], [])])
    _, run = p.receive(ERL, spawn_request(ERPC_CALL, [res, Atom("m"), Atom("f"), []], ERPC_OPTS))
    (down,) = p.finished(run.job, None)  # None has no term form
    assert down.message.control[4][2][1] == b"UnencodableTerm"


def test_erpc_cast_runs_without_a_result_and_a_demonitor_quiets_it() -> None:
    exposed = Exposed()
    exposed.expose("m", "f", lambda x: x)
    p = Processes(PY, CREATION, exposed=exposed)
    mfa = (Atom("erpc"), Atom("execute_cast"), 3)
    _, run = p.receive(ERL, spawn_request(mfa, [Atom("m"), Atom("f"), [1]], []))
    assert isinstance(run, Run) and p.finished(run.job, 1) == []
    _, run = p.receive(ERL, spawn_request(ERPC_CALL, [REF, Atom("m"), Atom("f"), [1]], ERPC_OPTS))
    p.receive(ERL, DistMessage((int(Control.DEMONITOR_P), THEM, run.job.pid, REF)))
    assert p.finished(run.job, 1) == []


# -- pg ---------------------------------------------------------------------------

PEER_SCOPE = Pid(ERL, 40, 0, 5)
ERL_MEMBER = Pid(ERL, 41, 0, 5)


def test_pg_discover_sync_join_and_leave() -> None:
    p = Processes(PY, CREATION)
    scope = p.scopes[Atom("pg")]
    jobs = p.mailbox_opened(Atom("jobs"))
    assert p.local.whereis(Atom("pg")) == scope.pid
    (discover,) = wire(p.node_up(ERL))
    assert discover.message.control == (6, scope.pid, Atom(""), Atom("pg"))
    assert discover.message.payload == (Atom("discover"), scope.pid)
    scope.join(Atom("workers"), [jobs])  # no peer yet: nobody to tell
    out = wire(p.receive(ERL, send(scope.pid, (Atom("discover"), PEER_SCOPE))))
    sync, watch, back = out
    gen_cast = (Atom("$gen_cast"), (Atom("sync"), scope.pid, [(Atom("workers"), [jobs])]))
    assert sync.message.payload == gen_cast and sync.message.control[2] == PEER_SCOPE
    assert watch.message.control[:3] == (19, scope.pid, PEER_SCOPE)
    assert back.message.payload == (Atom("discover"), scope.pid)
    cast = (Atom("$gen_cast"), (Atom("sync"), PEER_SCOPE, [(Atom("workers"), [ERL_MEMBER])]))
    assert p.receive(ERL, send(scope.pid, cast)) == []
    assert scope.get_members(Atom("workers")) == [jobs, ERL_MEMBER]
    other = Pid(ERL, 42, 0, 5)
    p.receive(ERL, send(scope.pid, (Atom("join"), PEER_SCOPE, [1, 2], [other])))
    assert scope.get_members([1, 2]) == [other]
    p.receive(ERL, send(scope.pid, (Atom("leave"), PEER_SCOPE, other, [[1, 2]])))
    assert scope.get_members([1, 2]) == [] and scope.which_groups() == [Atom("workers")]
    (joined,) = scope.join(Atom("more"), [jobs])
    assert joined.message.payload == (Atom("join"), scope.pid, Atom("more"), [jobs])
    (left,) = wire(p.mailbox_closed(Atom("jobs")))
    assert left.message.payload[:3] == (Atom("leave"), scope.pid, jobs)
    assert sorted(g.name for g in left.message.payload[3]) == ["more", "workers"]
    assert scope.get_members(Atom("workers")) == [ERL_MEMBER]
    p.node_down(ERL)
    assert scope.get_members(Atom("workers")) == []


def test_pg_ignores_a_join_from_an_unknown_scope_and_drops_nonsense() -> None:
    p = Processes(PY, CREATION)
    scope = p.scopes[Atom("pg")]
    p.receive(ERL, send(scope.pid, (Atom("join"), PEER_SCOPE, Atom("g"), ERL_MEMBER)))
    assert scope.get_members(Atom("g")) == []
    dropped = only(p.receive(ERL, reg_send(THEM, Atom("pg"), (Atom("nonsense"),))))
    assert isinstance(dropped, Dropped) and dropped.counter == "erlang_bad_control"


# -- bad input --------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        DistMessage((int(Control.MONITOR_P), 1, Atom("x"), REF)),
        DistMessage((int(Control.MONITOR_P), THEM, 3.5, REF)),
        DistMessage((int(Control.MONITOR_P), THEM)),
        DistMessage((int(Control.DEMONITOR_P), THEM, Atom("x"), 7)),
        DistMessage((int(Control.MONITOR_P_EXIT), THEM, THEM, 1, NOPROC)),
        DistMessage((int(Control.SEND), Atom(""), Atom("name")), 1),
        DistMessage((int(Control.REG_SEND), THEM, Atom("")), 1),
        DistMessage((int(Control.SPAWN_REQUEST), REF, THEM, THEM, 5, []), []),
        DistMessage((int(Control.SPAWN_REQUEST), REF, THEM, THEM, ERPC_CALL, 7), []),
        DistMessage((int(Control.SPAWN_REQUEST), REF, THEM, THEM, ERPC_CALL, []), [1, 2, 3, 4]),
        DistMessage((int(Control.SPAWN_REQUEST), REF, THEM, THEM, ERPC_CALL, []), [REF]),
        DistMessage((int(Control.SEND), Atom(""), Pid(PY, 3, 0, 77)), (Atom("join"), 1)),
        DistMessage((int(Control.REG_SEND), THEM, Atom(""), Atom("pg")), (Atom("$gen_cast"), 1)),
        DistMessage(
            (int(Control.REG_SEND), THEM, Atom(""), Atom("pg")),
            (Atom("$gen_cast"), (Atom("sync"), THEM, [(1, [2])])),
        ),
        DistMessage((int(Control.REG_SEND), THEM, Atom(""), Atom("pg")), (Atom("discover"), 1)),
        DistMessage((int(Control.UNLINK_ID), 1, 2)),
        DistMessage((int(Control.REG_SEND), THEM, Atom(""), Atom("jobs")), (Atom("$gen_call"), 1)),
    ],
)
def test_malformed_control_messages_are_dropped_and_counted(message: DistMessage) -> None:
    p = Processes(PY, CREATION)
    p.mailbox_opened(Atom("jobs"))
    dropped = only(p.receive(ERL, message))
    assert isinstance(dropped, Dropped) and dropped.counter == "erlang_bad_control"


def test_unknown_and_unsupported_control_messages_are_dropped() -> None:
    p = Processes(PY, CREATION)
    assert only(p.receive(ERL, DistMessage((99, 1)))).counter == "erlang_unknown_control"
    link = DistMessage((int(Control.LINK), THEM, THEM))
    assert only(p.receive(ERL, link)).counter == "erlang_unsupported_signals"
    (ack,) = p.receive(ERL, DistMessage((int(Control.UNLINK_ID), 5, THEM, Pid(PY, 1, 0, 1))))
    assert ack.message.control == (36, 5, Pid(PY, 1, 0, 1), THEM)


# -- whatever arrives, the core answers with effects, never an exception -----------

_kinds = st.sampled_from([int(kind) for kind in Control]) | st.integers(0, 60)
_elements = st.one_of(
    terms, pids, references, st.sampled_from([Atom("jobs"), Atom("pg"), Atom("net_kernel")])
)


@given(_kinds, st.lists(_elements, max_size=6), terms)
@settings(max_examples=100, deadline=None)
def test_arbitrary_control_messages_never_raise(kind: int, rest: list[Any], payload: Any) -> None:
    p = Processes(PY, CREATION)
    p.mailbox_opened(Atom("jobs"))
    control = (kind, *rest)
    message = DistMessage(control, payload) if kind in WITH_PAYLOAD else DistMessage(control)
    for effect in p.receive(ERL, message):
        assert isinstance(effect, Outgoing | Deliver | Dropped | CallFor | CallDone | Run)


@given(
    st.sampled_from([Atom("discover"), Atom("join"), Atom("leave"), Atom("$gen_cast")]),
    st.lists(_elements, max_size=4),
)
@settings(max_examples=100, deadline=None)
def test_arbitrary_pg_messages_never_raise(kind: Atom, rest: list[Any]) -> None:
    p = Processes(PY, CREATION)
    scope = p.scopes[Atom("pg")]
    p.receive(ERL, send(scope.pid, (Atom("discover"), PEER_SCOPE)))
    for effect in p.receive(ERL, send(scope.pid, (kind, *rest))):
        assert isinstance(effect, Outgoing | Dropped)
