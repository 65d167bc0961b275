"""Linux /proc/PID/coredump_filter bits (core(5)): which mappings a core holds, and the raw masks a user may pass."""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import enum

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Optional

from ...errors import InvalidKind


class CoreFilter(enum.IntFlag):
    """The coredump_filter bits, by the names core(5) gives them."""

    AnonPrivate = 1 << 0
    AnonShared = 1 << 1
    FilePrivate = 1 << 2
    FileShared = 1 << 3
    ElfHeaders = 1 << 4
    HugePrivate = 1 << 5
    HugeShared = 1 << 6
    DaxPrivate = 1 << 7
    DaxShared = 1 << 8


LINUX_FILTER_ALL = 0x1FF


def linux_filter(flags: Optional[int]) -> Optional[int]:
    """Validate raw coredump_filter bits (None: use the kind's own rules)."""
    if flags is None:
        return None
    if not isinstance(flags, int) or isinstance(flags, bool) or flags < 0 or flags & ~LINUX_FILTER_ALL:
        raise InvalidKind(
            f"flags {flags!r} is not a coredump_filter mask: use bits within 0x{LINUX_FILTER_ALL:X} (see core(5))",
            flags=flags if isinstance(flags, int) else None,
        )
    return flags
