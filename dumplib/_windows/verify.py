"""A written minidump read back: success is what the file holds, never MiniDumpWriteDump's return code."""
from __future__ import annotations

import sys

if sys.platform != "win32":  # survives python -O, unlike the assert below
    raise ImportError(f"{__name__} is Windows only")
assert sys.platform == "win32"  # tells type checkers on other platforms to skip this module

import os
from typing import Dict, Optional, Tuple

from ..errors import DumpFailed, InvalidDumpFile
from ..formats import minidump
from .masks import describe_mask, mask_has_full_memory, streams_for_mask
from . import wrappers
from ._common import ERROR_DISK_FULL, Win32Error
from .ntdll import UNDER_WINE

#: Below this many free bytes, a failed or truncated write is blamed on the full volume.
DISK_FULL_SLACK = 1 << 20


def check_dump(path: str, pid: int, mask: int) -> Tuple[str, ...]:
    """Raise DumpFailed unless the dump at *path* is a usable dump of *pid* holding every stream *mask*
    asks for; what the caller should be told (under Wine, the streams its dbghelp never writes)."""
    try:
        dump = verify_minidump(path, pid, mask)
    except DumpFailed as exc:
        raise blame_full_volume(path, pid) or exc from None
    missing = missing_streams(dump, mask)
    if not missing:
        return ()
    names = ", ".join(f"{flag} (stream {stream})" for stream, flag in sorted(missing.items()))
    if UNDER_WINE:
        warning = (f"Wine's dbghelp ignores every MINIDUMP_TYPE flag but WithFullMemory: this dump lacks what"
                   f" {names} asks for; real Windows writes it")
        return (warning,)
    raise DumpFailed(
        f"the dump of process {pid} lacks what its mask {describe_mask(mask)} asks for: {names};"
        " it was removed",
        pid=pid,
        reason="unverified",
    )


def verify_minidump(path: str, pid: int, mask: int) -> minidump.Minidump:
    """Read the file back and insist it holds what a dump of *pid* with *mask* must hold.

    MiniDumpWriteDump can return TRUE and leave a useless file (Wine does for bad handles or too
    little access), so success is decided here, never by the return code.
    """
    try:
        dump = minidump.read_minidump(path)
    except InvalidDumpFile as exc:
        raise DumpFailed(f"the written dump is unusable and was removed: {exc.message}", pid=pid) from None
    problems = list(dump.problems)
    if not dump.threads:
        problems.append("no thread list")
    if not dump.modules:
        problems.append("no module list")
    if mask_has_full_memory(mask):
        if not dump.has_stream(minidump.MEMORY64_LIST) or not dump.memory:
            problems.append("no memory in the Memory64List stream although the kind asks for all memory")
        else:
            missing = [t.tid for t in dump.threads if t.stack_size and not dump.holds(t.stack_start)]
            if missing:
                problems.append(f"the stacks of threads {missing} are missing from a full-memory dump")
    if dump.pid is not None and dump.pid != pid:
        problems.append(f"it describes process {dump.pid}, not {pid}")
    if problems:
        raise DumpFailed(
            f"MiniDumpWriteDump reported success for process {pid} but the file is not a usable dump"
            f" ({'; '.join(problems)}); it was removed. The process may have denied access or exited",
            pid=pid,
            reason="unverified",
        )
    return dump


def missing_streams(dump: minidump.Minidump, mask: int) -> Dict[int, str]:
    """Stream type -> flag, for every stream *mask* asks for that *dump* does not hold."""
    return {stream: flag for stream, flag in streams_for_mask(mask).items() if not dump.has_stream(stream)}


def blame_full_volume(path: str, pid: int) -> Optional[DumpFailed]:
    """A DumpFailed saying the volume filled up, when it has (Wine's dbghelp ignores failed writes)."""
    try:
        free = wrappers.disk_space(os.path.dirname(os.path.abspath(path)))[1]
    except (OSError, Win32Error):
        return None
    if free >= DISK_FULL_SLACK:
        return None
    return DumpFailed(
        f"the volume holding {path} filled up while process {pid} was being dumped ({free} bytes free);"
        " nothing was kept. Free space or choose another directory",
        pid=pid,
        winerror=ERROR_DISK_FULL,
        reason="disk-full",
    )
