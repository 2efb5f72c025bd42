"""Session-wide test settings.

Every node started by the tests (in this process or as a child process, which
inherits the environment) uses a port mapper on a private port, so that the
suite never meets a port mapper of the machine (epmd on 4369) nor leaves one.

``SKYCLUSTER_NODE_LOOP=asyncio pytest ...`` runs every node's thread on that event
loop (``shared``: every node on its application's loop, no thread): agents read
the variable themselves, in-process clusters take it as their default (``make
test`` runs the core and messaging tests once more in each of these two ways).
"""

from __future__ import annotations

import os
import socket

from skycluster import Cluster


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


os.environ["SKYCLUSTER_EPMD_PORT"] = str(_free_port())
os.environ.pop("ERL_EPMD_PORT", None)

if os.environ.get("SKYCLUSTER_NODE_LOOP"):
    assert Cluster.__init__.__kwdefaults__ is not None
    Cluster.__init__.__kwdefaults__["node_loop"] = os.environ["SKYCLUSTER_NODE_LOOP"]
