"""Log lines for operators, written by a telemetry handler, and a JSON formatter.

Loggers form the ``skycluster`` hierarchy (``skycluster.membership``,
``skycluster.node``, ``skycluster.strategy.<topology>``, ...). Membership
changes are one INFO line each with the reason; failures that repeat (an
unreachable host retried every few seconds, a misconfigured peer that keeps
knocking) are rate-limited. No line ever holds the cookie: the cookie is
never part of any event.

Each record carries its telemetry fields in ``record.skycluster`` (a dict), so
``--log-format json`` writes them as fields a log shipper can index.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from skycluster._ratelimit import RateLimit
from skycluster.telemetry import Detach, Measurements, Metadata

if TYPE_CHECKING:
    from skycluster.distribution.node import Node

log = logging.getLogger("skycluster.membership")

REMIND_AFTER = 300.0  # seconds: a failure that persists is logged again this often
LEFT_GRACE = 10.0  # seconds after a peer left gracefully when failing to reach it is no news


class MembershipLog:
    """Turns a node's telemetry into log lines."""

    def __init__(self, node: Node, *, remind_after: float = REMIND_AFTER) -> None:
        self._remind_after = remind_after
        # per peer: (reason text last logged, when, attempts since)
        self._failing: dict[str, tuple[str, float, int]] = {}
        self._handshakes = RateLimit(burst=5, window=60.0)
        self._stalls = RateLimit(burst=3, window=60.0)
        self._left: dict[str, float] = {}  # peers that said goodbye, and when
        self._detach: Detach = node.telemetry.attach(None, self._handle)

    def close(self) -> None:
        self._detach.close()

    def _handle(self, event: str, m: Measurements, md: Metadata) -> None:
        fields = {"event": event, **{k: v for k, v in md.items() if k != "metadata"}}
        extra = {"skycluster": fields}
        peer = md.get("peer")
        if event == "link.up":
            self._left.pop(str(peer), None)
            if md.get("hidden"):
                log.debug("tool %s linked (hidden) from %s", peer, md.get("address"), extra=extra)
            else:
                log.info("node %s is up (%s)", peer, md.get("address"), extra=extra)
        elif event == "link.down":
            if md.get("hidden"):
                log.debug("tool %s unlinked: %s", peer, md.get("reason"), extra=extra)
            else:
                log.info("node %s is down: %s", peer, md.get("reason"), extra=extra)
            if md.get("reason") == "shutdown":
                self._left[str(peer)] = time.monotonic()
                if len(self._left) > 4096:
                    self._left.pop(next(iter(self._left)))
        elif event == "link.flap":
            self._flap(str(peer), m, md, extra)
        elif event == "link.steady":
            log.info(
                "link to %s is steady again after %s flaps", peer, md.get("flaps"), extra=extra
            )
        elif event == "heartbeat.timeout":
            log.warning(
                "node %s missed heartbeats for %.1f s", peer, m.get("silence", 0.0), extra=extra
            )
        elif event == "loop.stall":
            if self._stalls.allow(event):
                why = (
                    "it is the application's loop (node_loop='shared'): code on it blocked; "
                    "keep blocking calls off that loop, raise heartbeat_timeout, or give "
                    "the node its own thread (the default node_loop)"
                    if md.get("shared")
                    else "its thread got no time: a long serve() handler or telemetry handler, "
                    "or code holding the GIL"
                )
                log.warning(
                    "the node's event loop ran nothing for %.1f s, and its heartbeats were "
                    "late: %s",
                    m.get("seconds", 0.0),
                    why,
                    extra=extra,
                )
        elif event == "connect.error":
            self._connect_failed(str(peer), md, extra)
        elif event == "connect.ok":
            failing = self._failing.pop(str(peer), None)
            if failing is not None:
                log.info("linked to %s after %d failed attempts", peer, failing[2], extra=extra)
        elif event == "handshake.rejected":
            claimed = md.get("claimed")
            host = str(md.get("peer_address", "?")).rsplit(":", 1)[0]
            allowed = self._handshakes.allow((host, claimed, md.get("reason")))
            said = f"; it says it is {claimed}" if claimed else ""
            log.log(
                logging.WARNING if allowed else logging.DEBUG,
                "handshake with %s failed: %s%s",
                md.get("peer_address"),
                md.get("error"),
                said,
                extra=extra,
            )
        elif event == "disconnect.ok":
            log.debug("disconnected from %s", peer, extra=extra)

    def _flap(self, peer: str, m: Measurements, md: Metadata, extra: dict[str, Any]) -> None:
        # One line per flapping peer (the core reports its first flap), saying what
        # to look at; later flaps are counted (metric skycluster_link_flaps) only.
        if md.get("flaps") != 1:
            log.debug("link to %s flapped again (%s in a row)", peer, md.get("flaps"), extra=extra)
            return
        look = (
            "it went silent: the load on either host, a stalled event loop there, or "
            "packets lost between them (a firewall dropping one direction)"
            if md.get("reason") == "heartbeat_timeout"
            else "it closed the link: its log (a restart loop, two processes with one "
            "name, a refused link), or something between them cutting connections"
        )
        log.warning(
            "link to %s flaps: down (%s) %.1f s after it came up; it is linked again "
            "after a wait that grows with each flap (next in %.1f s), and further flaps "
            "are only counted (skycluster_link_flaps, /status flapping) until it holds "
            "for 30 s. Look at %s",
            peer,
            md.get("reason"),
            m.get("lasted", 0.0),
            m.get("retry_in", 0.0),
            look,
            extra=extra,
        )

    def _connect_failed(self, peer: str, md: Metadata, extra: dict[str, Any]) -> None:
        # An unreachable host is retried every few seconds: log a change of reason,
        # then a reminder now and then, not every retry.
        why = str(md.get("error"))
        now = time.monotonic()
        if now - self._left.get(peer, -LEFT_GRACE) < LEFT_GRACE:
            # A discovery source still listed a node that just stopped: expected.
            log.debug("cannot link to %s, which just left: %s", peer, why, extra=extra)
            return
        last = self._failing.get(peer)
        where = f"{peer} at {md['address']}" if md.get("address") else peer
        if last is None or last[0] != why:
            self._failing[peer] = (why, now, 1 if last is None else last[2] + 1)
            log.warning("cannot link to %s: %s", where, why, extra=extra)
        elif now - last[1] >= self._remind_after:
            self._failing[peer] = (why, now, last[2] + 1)
            log.warning(
                "still cannot link to %s: %s (%d attempts)", where, why, last[2] + 1, extra=extra
            )
        else:
            self._failing[peer] = (why, last[1], last[2] + 1)
            log.debug("still cannot link to %s: %s", where, why, extra=extra)
        if len(self._failing) > 4096:  # bounded, whatever strategies dial
            self._failing.pop(next(iter(self._failing)))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "skycluster", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str = "warning", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Log to ``stream`` (stderr) as ``text`` or ``json`` lines, for the CLI."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
