"""Dump kinds and what each one means on each platform.

A kind is a promise to the user about what the dump lets them debug; each platform turns it into
its own mechanism: a MINIDUMP_TYPE mask on Windows (_windows/masks.py), region-selection rules and
coredump_filter bits on Linux (_linux/core/corefilter.py).
"""
from __future__ import annotations

import enum

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Union

from .errors import InvalidKind

__all__ = ["DumpKind"]


class DumpKind(str, enum.Enum):
    """What the dump holds. Ordered from largest to smallest."""

    #: All memory, plus the metadata WinDbg's ``.dump /ma`` records (handles, threads, memory map).
    FULL = "full"
    #: ``mini`` plus private read/write memory (the heaps): what a leak hunt needs.
    MINIPLUS = "miniplus"
    #: Threads, stacks, modules, handles: enough for every thread's backtrace. Small.
    MINI = "mini"
    #: The smallest shareable dump: stacks and module list, filtered of data and paths.
    TRIAGE = "triage"

    @classmethod
    def parse(cls, value: Union["DumpKind", str]) -> "DumpKind":
        """*value* as a DumpKind: a member, or its name in any case with spaces around; else InvalidKind."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        choices = ", ".join(k.value for k in cls)
        raise InvalidKind(f"unknown dump kind {value!r}; choose one of: {choices}", kind=value)

    def __str__(self) -> str:
        return self.value
