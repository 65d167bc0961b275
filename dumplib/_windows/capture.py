"""The PSS snapshot a dump may be written from (PssCaptureSnapshot, Windows 8.1+): whether the
system's commit can hold its clone, taking it, and freeing it on every way out.

What to capture and with which access is pure logic in snapshot.py; this module makes the calls.
"""
from __future__ import annotations

import sys

if sys.platform != "win32":  # survives python -O, unlike the assert below
    raise ImportError(f"{__name__} is Windows only")
assert sys.platform == "win32"  # tells type checkers on other platforms to skip this module

import contextlib
import ctypes
import dataclasses
import time
from ctypes import wintypes
from typing import Iterator, List, Optional

from . import kernel32, wrappers
from . import snapshot as snapshot_rules
from ._common import Win32Error
from .policy import DUMPER_MACHINE

#: Why a snapshot cannot be taken where kernel32 lacks the PSS functions.
NO_PSS = ("this Windows has no PssCaptureSnapshot (Windows 8.1 / Server 2012 R2 and later have it;"
          " Wine does not)")
SNAPSHOT_ACCESS = snapshot_rules.snapshot_access


def commit_shortfall(process: int) -> Optional[str]:
    """Why the system's commit cannot hold a clone of *process* now (None: it can)."""
    try:
        available, limit = wrappers.commit_room()
        private = wrappers.private_bytes(process)
    except Win32Error as exc:  # unmeasured is not room: never risk the system's commit
        return f"the system's commit could not be checked ({exc.message})"
    return snapshot_rules.commit_shortfall(private, available, limit)


class CaptureFailed(Exception):
    """PssCaptureSnapshot failed: no snapshot exists and nothing was written."""


@dataclasses.dataclass(frozen=True)
class TakenSnapshot:
    """A live snapshot (HPSS) of the target, as MiniDumpWriteDump reads it instead of the process."""

    handle: int
    #: How long PssCaptureSnapshot took: the only time the target is suspended.
    seconds: float
    #: The clone's private commit, where Windows says.
    cost: Optional[int]


@contextlib.contextmanager
def captured(process: int, mask: int, warnings: List[str]) -> Iterator[TakenSnapshot]:
    """A snapshot of *process* holding what a dump with *mask* needs, freed on every way out.

    A clone left behind would live on, holding its commit, until this process exits."""
    handle = wintypes.HANDLE()
    began = time.monotonic()
    try:
        try:
            kernel32.PssCaptureSnapshot(process, snapshot_rules.capture_flags(mask),
                                        snapshot_rules.context_flags(DUMPER_MACHINE), ctypes.byref(handle))
        except Win32Error as exc:
            raise CaptureFailed(f"PssCaptureSnapshot failed: {exc.message}") from None
        seconds = time.monotonic() - began
        yield TakenSnapshot(handle.value or 0, seconds, wrappers.snapshot_clone_cost(handle.value or 0))
    finally:
        if handle.value:
            free_snapshot(handle.value, warnings)


def free_snapshot(handle: int, warnings: List[str]) -> None:
    """PssFreeSnapshot in this process, where the snapshot handle lives; a failure is said, not raised
    (it must not hide why the dump failed)."""
    try:
        kernel32.PssFreeSnapshot(kernel32.GetCurrentProcess(), handle)
    except Win32Error as exc:
        warnings.append(f"the snapshot could not be freed ({exc.message}): its clone process keeps its"
                        " memory until this Python process exits")
