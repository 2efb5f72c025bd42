"""The node thread's event loop: uvloop when installed (``auto``), or the standard
asyncio loop; nodes on either kind link and message each other."""

from __future__ import annotations

import os
import sys

import pytest
from cluster_helpers import async_test, dial_name, make, running

from skycluster import Cluster, ConfigError


@async_test
async def test_nodes_on_either_loop_link_call_and_keep_order() -> None:
    a, b = make("a", node_loop="asyncio"), make("b", node_loop="uvloop")
    async with running(a, b):
        assert (await a.status())["node_loop"] == "asyncio"
        assert (await b.status())["node_loop"] == "uvloop"
        assert await a.connect(dial_name(b))
        a.serve("double", lambda n: 2 * n)
        box = b.register("box")
        assert await b.call(dial_name(a), "double", 21) == 42
        for seq in range(2000):
            await a.send(dial_name(b), "box", seq)
        assert [await box.get() for _ in range(2000)] == list(range(2000))


@async_test
async def test_auto_takes_uvloop_when_installed() -> None:
    wanted = os.environ.get("SKYCLUSTER_NODE_LOOP", "auto")  # the suite's override, if any
    a = make("a")
    async with running(a):
        status = await a.status()
    assert status["node_loop"] == ("uvloop" if wanted in ("auto", "uvloop") else "asyncio")


@async_test
async def test_auto_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what `import uvloop` sees when absent
    a = make("a", node_loop="auto")
    async with running(a):
        assert (await a.status())["node_loop"] == "asyncio"
    with pytest.raises(ConfigError, match=r"pip install 'skycluster\[fast\]'"):
        make("b", node_loop="uvloop")


def test_an_unknown_loop_is_refused_with_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"node_loop .* must be auto, asyncio or uvloop, got"):
        Cluster("a@127.0.0.1", cookie="x", node_loop="tokio")
