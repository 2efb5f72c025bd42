"""Session-wide test settings.

Every node started by the tests (in this process or as a child process, which
inherits the environment) uses a port mapper on a private port, so that the
suite never meets a port mapper of the machine (epmd on 4369) nor leaves one.
"""

from __future__ import annotations

import os
import socket


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


os.environ["SKYCLUSTER_EPMD_PORT"] = str(_free_port())
os.environ.pop("ERL_EPMD_PORT", None)
