"""The term codec against a real ``erl`` (Debian's erlang-base, OTP 25): thousands
of generated terms go through erl's binary_to_term and term_to_binary, and terms
that only erl can make (pids, references, ports, funs) come back from Python
exactly equal."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from erlang_strategies import canon, has_map, terms
from erlang_term_peer import ErlangError, ErlTermPeer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skycluster.erlang import Atom, ImproperList, OpaqueFun, Pid, Port, Reference, decode, encode

pytestmark = [
    pytest.mark.erlang,
    pytest.mark.skipif(
        shutil.which("erl") is None,
        reason="needs Debian's erlang-base for a real erl: apt-get install erlang-base",
    ),
]


@pytest.fixture(scope="module")
def erl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ErlTermPeer]:
    peer = ErlTermPeer(tmp_path_factory.mktemp("erl"))
    try:
        yield peer
    finally:
        peer.close()


# Five terms per example: 2,000 terms in all, with less of hypothesis's per-example cost.
@given(st.lists(terms, min_size=5, max_size=5))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_generated_terms_survive_erl(erl: ErlTermPeer, values: list[Any]) -> None:
    for value in values:
        ours = encode(value)
        theirs = erl.echo(ours)
        assert canon(decode(theirs)) == canon(value)
        if not has_map(value):  # erl orders map keys its own way
            assert theirs == ours, "erl encodes this term differently"


@given(st.lists(terms, min_size=5, max_size=5))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_compressed_terms_survive_erl(erl: ErlTermPeer, values: list[Any]) -> None:
    for value in values:
        assert canon(decode(erl.echo(encode(value, compressed=6)))) == canon(value)


ERL_MADE = [
    "self()",
    "make_ref()",
    "hd(erlang:ports())",
    "fun lists:map/2",
    "fun(X) -> {X, 1} end",
    "<<1:3>>",
    "<<1, 2, 3:5>>",
    '"abc"',
    "[2, 40]",
    "[1 | 2]",
    "[a, b | c]",
    "[[alias | make_ref()]]",
    "#{[1] => 2, #{a => b} => c, {x, [y]} => d}",
    "maps:from_list([{N, N * N} || N <- lists:seq(1, 100)])",
    "1.0e300",
    "-0.0",
    "-(1 bsl 2048)",
    "1 bsl 64",
    "list_to_atom([16#1F600, 16#e9])",
    "list_to_atom(lists:duplicate(255, 16#e9))",
    "list_to_tuple(lists:seq(1, 300))",
    "lists:seq(1, 70000)",
    "binary:copy(<<7>>, 100000)",
    "{true, false, undefined, nil, ''}",
]


@pytest.mark.parametrize("expression", ERL_MADE)
@pytest.mark.parametrize("compressed", [False, True])
def test_terms_made_by_erl_come_back_exactly_equal(
    erl: ErlTermPeer, expression: str, compressed: bool
) -> None:
    theirs = erl.evaluate(expression + ".", compressed=compressed)
    value = decode(theirs)
    ours = encode(value)
    assert erl.exactly_equal(ours, theirs), f"{expression} came back different"
    assert canon(decode(erl.echo(ours))) == canon(value)


def test_what_the_python_side_sees(erl: ErlTermPeer) -> None:
    pid = decode(erl.evaluate("self()."))
    assert isinstance(pid, Pid) and pid.node == Atom("nonode@nohost")
    assert isinstance(decode(erl.evaluate("make_ref().")), Reference)
    assert isinstance(decode(erl.evaluate("hd(erlang:ports()).")), Port)
    fun = decode(erl.evaluate("fun lists:map/2."))
    assert isinstance(fun, OpaqueFun) and fun.is_export
    assert decode(erl.evaluate("[a | b].")) == ImproperList((Atom("a"),), Atom("b"))
    assert decode(erl.evaluate('"hi".')) == [104, 105]
    assert decode(erl.evaluate("{true, undefined}.")) == (True, Atom("undefined"))


def test_python_conveniences_arrive_as_documented(erl: ErlTermPeer) -> None:
    ours = encode({"text": [1.5, True, b"raw"]})
    theirs = erl.evaluate('#{<<"text">> => [1.5, true, <<"raw">>]}.')
    assert erl.exactly_equal(ours, theirs)


def test_erl_refuses_what_the_decoder_refuses(erl: ErlTermPeer) -> None:
    """Two hostile inputs, as a sanity check that the refusals match Erlang's."""
    for raw in (bytes([131, 109, 0x7F, 0xFF, 0xFF, 0xFF, 1]), bytes([131, 104, 2, 97, 1])):
        with pytest.raises(ErlangError, match="badarg"):
            erl.echo(raw)
