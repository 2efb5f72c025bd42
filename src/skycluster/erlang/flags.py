"""Erlang distribution capability flags (``erts/emulator/beam/dist.h``).

Where the protocol documentation and ``dist.h`` disagree, ``dist.h`` wins: it is
what the emulator checks. OTP 25 refuses a peer without every flag of
``MANDATORY_25``; OTP 26 also refuses one without ``MANDATORY_26``.
"""

from __future__ import annotations

from enum import IntFlag
from typing import Final


class Flag(IntFlag):
    PUBLISHED = 0x1
    ATOM_CACHE = 0x2
    EXTENDED_REFERENCES = 0x4
    DIST_MONITOR = 0x8
    FUN_TAGS = 0x10
    DIST_MONITOR_NAME = 0x20
    HIDDEN_ATOM_CACHE = 0x40
    NEW_FUN_TAGS = 0x80
    EXTENDED_PIDS_PORTS = 0x100
    EXPORT_PTR_TAG = 0x200
    BIT_BINARIES = 0x400
    NEW_FLOATS = 0x800
    UNICODE_IO = 0x1000
    DIST_HDR_ATOM_CACHE = 0x2000
    SMALL_ATOM_TAGS = 0x4000
    UTF8_ATOMS = 0x10000
    MAP_TAG = 0x20000
    BIG_CREATION = 0x40000
    SEND_SENDER = 0x80000
    BIG_SEQTRACE_LABELS = 0x100000
    EXIT_PAYLOAD = 0x400000
    FRAGMENTS = 0x800000
    HANDSHAKE_23 = 0x1000000
    UNLINK_ID = 0x2000000
    MANDATORY_25_DIGEST = 0x4000000
    SPAWN = 0x1 << 32
    NAME_ME = 0x2 << 32
    V4_NC = 0x4 << 32
    ALIAS = 0x8 << 32
    ALTACT_SIG = 0x20 << 32


# dist.h: DFLAG_DIST_MANDATORY_25. MANDATORY_25_DIGEST on the wire stands for all of them.
MANDATORY_25: Final = (
    Flag.EXTENDED_REFERENCES
    | Flag.FUN_TAGS
    | Flag.EXTENDED_PIDS_PORTS
    | Flag.UTF8_ATOMS
    | Flag.NEW_FUN_TAGS
    | Flag.BIG_CREATION
    | Flag.NEW_FLOATS
    | Flag.MAP_TAG
    | Flag.EXPORT_PTR_TAG
    | Flag.BIT_BINARIES
    | Flag.HANDSHAKE_23
)
# dist.h: DFLAG_DIST_MANDATORY_26.
MANDATORY_26: Final = Flag.V4_NC | Flag.UNLINK_ID

# What skycluster requires of a peer: what OTP 26 requires (OTP 25 sends all of it),
# since the term codec writes 5-word references and 64-bit ports (V4_NC).
REQUIRED: Final = MANDATORY_25 | MANDATORY_26
# What every skycluster handshake offers: the required flags and the small UTF-8 atom
# tags the codec writes. The link adds what it implements (monitors, spawn, ...).
BASE: Final = REQUIRED | Flag.MANDATORY_25_DIGEST | Flag.SMALL_ATOM_TAGS


def effective(flags: int) -> int:
    """``flags`` with ``MANDATORY_25_DIGEST`` expanded into the flags it stands for."""
    return flags | MANDATORY_25 if flags & Flag.MANDATORY_25_DIGEST else flags


def missing(flags: int, required: int = REQUIRED) -> list[str]:
    """The names of the ``required`` flags that ``flags`` lacks."""
    absent = required & ~effective(flags)
    return [flag.name or hex(flag.value) for flag in Flag if flag.value & absent]


def describe(flags: int) -> str:
    """``flags`` as names, for logs and errors: ``"PUBLISHED|EXTENDED_REFERENCES|..."``."""
    names = [flag.name or hex(flag.value) for flag in Flag if flag.value & flags]
    unknown = flags & ~sum(flag.value for flag in Flag)
    if unknown:
        names.append(hex(unknown))
    return "|".join(names) or "0"
