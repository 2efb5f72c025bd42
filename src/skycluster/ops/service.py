"""Wires the operations features to a running node: the built-in telemetry
consumers (metrics, log lines) and, when configured, the HTTP endpoint."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from skycluster.distribution.node import Node
from skycluster.events import EventBus
from skycluster.ops.logs import MembershipLog
from skycluster.ops.metrics import Metrics

if TYPE_CHECKING:
    from skycluster.ops.server import HttpServer

log = logging.getLogger("skycluster.ops")


class Operations:
    """What an operator sees of one running node: owns its metrics (counted from
    telemetry), its membership log lines and, when ``--http`` is set, the HTTP
    endpoint (``/status``, ``/metrics``, the page); started after the node and
    closed before it."""

    def __init__(self, node: Node, bus: EventBus) -> None:
        self.node = node
        self.metrics = Metrics(node, bus)
        self.log = MembershipLog(node)
        self.http: HttpServer | None = None
        if node.settings.http is not None:
            from skycluster.ops.server import HttpServer, HttpSettings  # only when asked for

            host, port = node.settings.http
            self.http = HttpServer(node, bus, self.metrics, HttpSettings(host=host, port=port))

    async def start(self) -> None:
        if self.http is not None:
            try:
                await self.http.start()
            except OSError as exc:
                from skycluster.errors import StartError

                where = f"{self.http.settings.host}:{self.http.settings.port}"
                raise StartError(
                    f"cannot serve the operations endpoint on {where}: "
                    f"{exc.strerror or exc}; choose another --http HOST:PORT"
                ) from None

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.stop()
        self.metrics.close()
        self.log.close()
