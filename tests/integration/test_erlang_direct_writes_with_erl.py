"""Messages from an application thread to a real ``erl`` go straight to the socket
when the link is idle or has just answered, and through the node's loop in batches
otherwise: either way they arrive whole and in the order sent, from one thread and
from several (each thread's own order)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from agents import LOOPBACK, WITHIN
from erl_dist import ERL, NEEDS_ERL, ErlNode, python_node

from skycluster.erlang import Atom

pytestmark = NEEDS_ERL

COOKIE = "direct-cookie"
PY = f"py@{LOOPBACK}"
# echo: every {Tag, Seq, Bin} comes back to the Python mailbox back as {Tag, Seq, size}.
ERL_CODE = (
    "register(echo, spawn(fun Echo() -> receive {T, S, B} -> "
    "{back, '" + PY + "'} ! {T, S, byte_size(B)}, Echo() end end)), "
    'io:format(standard_error, "ready~n", []), '
    "receive stop -> ok end."
)
SIZES = [100, 1 << 20, 10, 70_000, 1]  # bytes of the burst's messages, in turn


@pytest.fixture
def erl(tmp_path: Path) -> Iterator[ErlNode]:
    node = ErlNode(tmp_path, ERL_CODE, COOKIE)
    try:
        yield node
    finally:
        node.close()


def test_messages_from_threads_arrive_whole_and_in_order(erl: ErlNode) -> None:
    async def scenario() -> tuple[list[tuple[object, int, int]], dict[str, int]]:
        async with python_node(erl.epmd_port, PY, COOKIE) as py:
            back = py.register("back")
            assert await py.connect(ERL)
            # One at a time (each waits for its echo: direct writes), then a burst
            # (batches), sizes up to 1 MiB (a socket may take those in parts).
            for seq in range(200):
                await py.send(ERL, "echo", (Atom("one"), seq, b"x" * (seq % 7)))
                async with asyncio.timeout(WITHIN):
                    assert await back.get() == (Atom("one"), seq, seq % 7)
            for seq in range(2000):
                await py.send(ERL, "echo", (Atom("burst"), seq, b"y" * SIZES[seq % 5]))

            def sender(tag: str) -> None:
                for seq in range(500):
                    py.send_blocking(ERL, "echo", (Atom(tag), seq, b"z" * (seq % 3)))

            threads = [threading.Thread(target=sender, args=(f"t{i}",)) for i in range(3)]
            for thread in threads:
                thread.start()
            await asyncio.to_thread(lambda: [thread.join() for thread in threads])
            got: list[tuple[object, int, int]] = []
            async with asyncio.timeout(WITHIN * 4):
                while len(got) < 2000 + 3 * 500:
                    got.extend(await back.get_many(10_000))
            return got, py.stats()

    got, stats = asyncio.run(scenario())
    burst = [m for m in got if m[0] == Atom("burst")]
    assert burst == [(Atom("burst"), seq, SIZES[seq % 5]) for seq in range(2000)]
    for i in range(3):
        tag = Atom(f"t{i}")
        assert [m for m in got if m[0] == tag] == [(tag, seq, seq % 3) for seq in range(500)]
    assert stats.get("erlang_direct_writes", 0) >= 1  # the round trips went straight out
