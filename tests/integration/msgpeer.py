"""A peer node for the messaging tests, run as its own process.

    python msgpeer.py NAME@127.0.0.1:PORT COOKIE [--heartbeat I T] [--max-message-size N]

Prints one JSON line {"event": "ready"} once its mailboxes are registered, and
{"event": "nodedown", ...} for membership changes. Mailboxes:

* ``echo``: answers a call with the request; a plain message [node, box, x] is
  sent back to ``box`` on ``node`` as x.
* ``sink``: counts [tag, seq, ...] messages per tag and checks their order.
* ``slow``: like sink, but takes a pause every 100 messages (a slow receiver),
  with a small mailbox (maxsize 100).
* ``double`` (served on the node's thread): answers x * 2; ``boom`` raises.
* ``hang``: takes calls and never answers. ``die``: exits at once on a call.
* ``ctl``: calls that drive the peer: {"op": "stats"}, {"op": "subscribe",
  "topic", "count"}, {"op": "stream", "to", "box", "count"}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import skycluster
import skycluster.messaging


class Sink:
    def __init__(self) -> None:
        self.count = 0
        self.last: dict[str, int] = {}
        self.out_of_order = 0
        self.bytes = 0
        self.max_queued = 0

    def take(self, message: Any) -> None:
        self.count += 1
        if isinstance(message, list) and len(message) >= 2:
            tag, seq = str(message[0]), message[1]
            if seq != self.last.get(tag, -1) + 1:
                self.out_of_order += 1
            self.last[tag] = seq
            if len(message) > 2 and isinstance(message[2], bytes):
                self.bytes += len(message[2])
        elif isinstance(message, bytes):
            self.bytes += len(message)

    def stats(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "last": self.last,
            "out_of_order": self.out_of_order,
            "bytes": self.bytes,
            "max_queued": self.max_queued,
        }


def emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def consume(box: skycluster.messaging.Inbox, handle: Callable[[Any], Any]) -> None:
    async for message in box:
        result = handle(message)
        if asyncio.iscoroutine(result):
            await result


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("cookie")
    parser.add_argument("--heartbeat", nargs=2, type=float, default=(1.0, 3.0))
    parser.add_argument("--max-message-size", type=int, default=64 * 1024 * 1024)
    args = parser.parse_args()
    cluster = skycluster.Cluster(
        args.name,
        cookie=args.cookie,
        port_mapper=False,
        heartbeat_interval=args.heartbeat[0],
        heartbeat_timeout=args.heartbeat[1],
        max_message_size=args.max_message_size,
    )
    async with cluster:
        sinks = {"sink": Sink(), "slow": Sink()}
        topics: dict[str, list[Sink]] = {}
        tasks: list[asyncio.Task[None]] = []

        def on_event(event: skycluster.Event) -> None:
            if isinstance(event, skycluster.NodeDown):
                emit(event="nodedown", node=event.node, reason=event.reason.value)
            else:
                emit(event="nodeup", node=event.node)

        cluster.on_event(on_event)

        def echo(message: Any) -> None:
            if isinstance(message, skycluster.Request):
                message.reply(message.message)
            else:
                node, box, value = message
                cluster.send_nowait(node, box, value)

        slow_box = cluster.register("slow", maxsize=100)

        async def slow(message: Any) -> None:
            sinks["slow"].max_queued = max(sinks["slow"].max_queued, len(slow_box) + 1)
            sinks["slow"].take(message)
            if sinks["slow"].count % 100 == 0:
                await asyncio.sleep(0.05)

        hung: list[skycluster.Request] = []

        def die(message: Any) -> None:
            emit(event="dying")
            os._exit(3)

        async def ctl(request: Any) -> None:
            op = request.message["op"]
            if op == "stats":
                request.reply(
                    {
                        "sinks": {k: s.stats() for k, s in sinks.items()},
                        "topics": {t: [s.stats() for s in subs] for t, subs in topics.items()},
                        "counters": cluster.stats(),
                        "nodes": cluster.nodes(),
                    }
                )
            elif op == "subscribe":
                for _ in range(request.message["count"]):
                    sink = Sink()
                    topics.setdefault(request.message["topic"], []).append(sink)
                    sub = cluster.pubsub.subscribe(request.message["topic"])
                    tasks.append(asyncio.create_task(consume(sub, sink.take)))
                request.reply("ok")
            elif op == "stream":
                request.reply("ok")
                m = request.message
                for seq in range(m["count"]):
                    await cluster.send(m["to"], m["box"], ["stream", seq, b"s" * 100])
            elif op == "broadcast":
                await cluster.pubsub.broadcast(request.message["topic"], request.message["msg"])
                request.reply("ok")

        handlers: dict[str, Callable[[Any], Any]] = {
            "echo": echo,
            "sink": sinks["sink"].take,
            "hang": hung.append,
            "die": die,
            "ctl": ctl,
        }
        for name, handle in handlers.items():
            tasks.append(asyncio.create_task(consume(cluster.register(name), handle)))
        tasks.append(asyncio.create_task(consume(slow_box, slow)))

        def boom(request: Any) -> Any:
            raise ValueError("boom")

        cluster.serve("double", lambda request: request * 2)
        cluster.serve("boom", boom)
        emit(event="ready", name=cluster.name, address=cluster.address)
        await asyncio.Event().wait()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
