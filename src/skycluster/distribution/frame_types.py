"""The link frame types: every type that travels on a link, each defined once.

A frame is a msgpack array whose first item is its type (``docs/protocol.md``).
The link handles its own types; each layer above owns a range and registers a
handler for it with :meth:`skycluster.distribution.node.Node.handle_frames`.
A type nobody handles is ignored, so that newer peers can add some.
"""

from __future__ import annotations

# The link's own (skycluster.distribution.link).
PING = 1  # [PING, seq]            heartbeat; answered with PONG
PONG = 2  # [PONG, seq]
# 3 was PEERS, the whole peer list on every change: now PEER_LIST below.
GOODBYE = 4  # [GOODBYE, reason]   the sender is about to close: "shutdown" | "disconnect"
LINK = range(PING, 5)

# Messaging (skycluster.messaging.wire).
SEND = 5  # [SEND, mailbox, [message, ...]]
CALL = 6  # [CALL, mailbox, ref, request]
REPLY = 7  # [REPLY, ref, status, value]
PUBLISH = 8  # [PUBLISH, topic, [message, ...]]
FRAGMENT = 9  # [FRAGMENT, more, chunk]
MESSAGING = range(SEND, 20)

# Operations (skycluster.ops.remote).
STATUS_REQUEST = 20  # [STATUS_REQUEST, id]
STATUS = 21  # [STATUS, id, map]
OPERATIONS = range(STATUS_REQUEST, 30)

# Membership (skycluster.membership.driver, docs/membership.md).
TICK = 30  # [TICK]                 the link was idle for an interval: one way, no answer
PEER_LIST = 31  # [PEER_LIST, version, base, whole, [name, ...] added, [name, ...] removed]
PEER_LIST_REQUEST = 32  # [PEER_LIST_REQUEST]  a change did not follow: send the whole list
MEMBERSHIP = range(TICK, 40)

# Every type a frame may have: a msgpack positive fixint, which frames.frame_kind()
# reads without decoding the frame (it says 0 when it cannot).
ALL = range(1, 0x80)
