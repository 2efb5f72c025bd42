"""A node's Erlang links in its status: a real ``erl`` (published, or ``-hidden``)
linked to a node with ``erlang=True`` shows in ``Cluster.status()`` (what ``/status``
serves) and in ``skycluster members`` (a separate process that asks the node over
a skycluster link), with its name, that it is an Erlang link, whether it is hidden
and its net_ticktime."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from agents import LOOPBACK, WITHIN, clean_environ, run_cli
from erl_dist import ERL, NEEDS_ERL, ErlNode, python_node

pytestmark = NEEDS_ERL

COOKIE = "status-cookie"
PY = f"py@{LOOPBACK}"
TICKTIME = 8

# erl pings the Python node until it answers (it starts first), then says so.
PINGS = (
    "spawn(fun Ping() -> case net_adm:ping('" + PY + "') of "
    '  pong -> io:format(standard_error, "pong~n", []); '
    "  pang -> timer:sleep(200), Ping() end end), "
    'io:format(standard_error, "ready~n", []), '
    "receive stop -> ok end."
)


@pytest.mark.parametrize("hidden", [False, True], ids=["published", "hidden"])
def test_an_erlang_link_shows_in_status_and_members(tmp_path: Path, hidden: bool) -> None:
    extra = ["-kernel", "net_ticktime", str(TICKTIME), *(["-hidden"] if hidden else [])]
    erl = ErlNode(tmp_path / "erl", PINGS, COOKIE, extra)
    try:
        (tmp_path / "home").mkdir()
        env = clean_environ(tmp_path / "home", {"SKYCLUSTER_COOKIE": COOKIE})

        async def with_members() -> tuple[dict[str, Any], str, str]:
            async with python_node(erl.epmd_port, PY, COOKIE, erlang_ticktime=TICKTIME) as py:
                await asyncio.to_thread(erl.erl.wait_for_log, "^pong$", WITHIN)
                status = await py.status()
                assert py.address is not None
                spec = f"{PY}:{py.address.rsplit(':', 1)[1]}"
                shown = await asyncio.to_thread(run_cli, ["members", spec], env)
                assert shown.returncode == 0, shown.stderr
                as_json = await asyncio.to_thread(run_cli, ["members", spec, "--json"], env)
                assert as_json.returncode == 0, as_json.stderr
                return status, shown.stdout, as_json.stdout

        status, table, as_json = asyncio.run(with_members())
    finally:
        erl.close()

    (link,) = status["erlang_peers"]
    assert link["node"] == ERL and link["protocol"] == "erlang"
    assert link["hidden"] is hidden and link["ticktime"] == TICKTIME
    assert link["direction"] == "in" and link["since"] > 0 and link["last_heard"] >= 0
    assert status["peers"] == []  # skycluster peers only: the BEAM node is listed apart

    # skycluster members: the same link, from the node's own view over the wire.
    assert json.loads(as_json)["erlang_peers"][0]["node"] == ERL
    rows = table.splitlines()
    (row,) = [line for line in rows if ERL in line]
    kind = "erlang hidden" if hidden else "erlang"
    assert f"{kind}, ticktime {TICKTIME}s" in row
    summary = "1 Erlang link (1 hidden)" if hidden else "1 Erlang link"
    assert rows[-1].endswith(summary), table
    assert COOKIE not in table + as_json
