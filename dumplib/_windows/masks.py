"""MINIDUMP_TYPE: what dbghelp writes for each dump kind, and the masks a user may pass.

Pure Python (no DLL), so the masks are unit-tested on every OS; documented in README.md ("Kinds").
"""
from __future__ import annotations

import enum
from typing import Dict, Optional

from ..errors import InvalidKind
from ..kinds import DumpKind


class MiniDumpType(enum.IntFlag):
    """MINIDUMP_TYPE from dbghelp.h (values are ABI; names without the ``MiniDump`` prefix)."""

    Normal = 0x00000000
    WithDataSegs = 0x00000001
    WithFullMemory = 0x00000002
    WithHandleData = 0x00000004
    FilterMemory = 0x00000008
    ScanMemory = 0x00000010
    WithUnloadedModules = 0x00000020
    WithIndirectlyReferencedMemory = 0x00000040
    FilterModulePaths = 0x00000080
    WithProcessThreadData = 0x00000100
    WithPrivateReadWriteMemory = 0x00000200
    WithoutOptionalData = 0x00000400
    WithFullMemoryInfo = 0x00000800
    WithThreadInfo = 0x00001000
    WithCodeSegs = 0x00002000
    WithoutAuxiliaryState = 0x00004000
    WithFullAuxiliaryState = 0x00008000
    WithPrivateWriteCopyMemory = 0x00010000
    IgnoreInaccessibleMemory = 0x00020000
    WithTokenInformation = 0x00040000
    WithModuleHeaders = 0x00080000
    FilterTriage = 0x00100000
    WithAvxXStateContext = 0x00200000
    WithIptTrace = 0x00400000
    ScanInaccessiblePartialPages = 0x00800000
    FilterWriteCombinedMemory = 0x01000000


#: Every bit dbghelp.h defines (MiniDumpValidTypeFlags, up to FilterWriteCombinedMemory); a raw
#: mask outside it is refused.
MINIDUMP_VALID_FLAGS = 0x01FFFFFF
#: Bits newer than the dbghelp of Windows 7/8; dropped (with a warning) if the loaded DLL rejects them.
MINIDUMP_NEWER_FLAGS = MINIDUMP_VALID_FLAGS & ~0x001FFFFF

_M = MiniDumpType
#: Metadata every kind but triage carries: handles, unloaded modules, thread times, token, the memory map.
_METADATA = (
    _M.WithHandleData
    | _M.WithUnloadedModules
    | _M.WithFullMemoryInfo
    | _M.WithThreadInfo
    | _M.WithTokenInformation
    | _M.IgnoreInaccessibleMemory
)

_WINDOWS_MASKS = {
    # WinDbg `.dump /ma` (0x1826) plus the token and "skip unreadable pages instead of failing".
    DumpKind.FULL: _M.WithFullMemory | _METADATA,
    # ProcDump -mp is a callback, not a mask; the nearest mask is dotnet-dump's "heap" idea:
    # mini plus every private read/write page.
    DumpKind.MINIPLUS: _M.WithPrivateReadWriteMemory
    | _M.WithDataSegs
    | _M.WithProcessThreadData
    | _M.WithIndirectlyReferencedMemory
    | _METADATA,
    # ProcDump -mm as observed (0x469925) without IptTrace (needs a trace session) and
    # FullAuxiliaryState (can pull whole runtimes' state in), plus what ProcDump documents for -mm
    # but its mask lacks: IndirectlyReferencedMemory (0x40), the pages the stacks point into, so
    # the objects a frame's locals refer to can be read. dbghelp caps it (about 1 KiB around each
    # pointer), so it adds kilobytes per thread, not heaps.
    DumpKind.MINI: _M.WithDataSegs | _M.WithProcessThreadData | _M.WithIndirectlyReferencedMemory | _METADATA,
    # dotnet-dump's triage mask: stacks and module names, data and paths filtered out.
    DumpKind.TRIAGE: _M.FilterTriage
    | _M.IgnoreInaccessibleMemory
    | _M.WithoutOptionalData
    | _M.WithProcessThreadData
    | _M.FilterModulePaths
    | _M.WithUnloadedModules
    | _M.FilterMemory
    | _M.WithHandleData,
}


def windows_mask(kind: DumpKind, flags: Optional[int] = None) -> int:
    """The MINIDUMP_TYPE mask for *kind*, or the validated raw *flags* when given."""
    if flags is None:
        return int(_WINDOWS_MASKS[kind])
    if not isinstance(flags, int) or isinstance(flags, bool) or flags < 0 or flags & ~MINIDUMP_VALID_FLAGS:
        raise InvalidKind(
            f"flags {flags!r} is not a MINIDUMP_TYPE mask: use bits within 0x{MINIDUMP_VALID_FLAGS:X}",
            kind=kind.value,
            flags=flags if isinstance(flags, int) else None,
        )
    return flags


#: The stream each flag makes dbghelp write (MINIDUMP_STREAM_TYPE values), for verification.
#: UnloadedModules is left out: the stream is only written when a module was unloaded.
MINIDUMP_FLAG_STREAMS = {
    MiniDumpType.WithFullMemory: 9,  # Memory64ListStream
    MiniDumpType.WithHandleData: 12,  # HandleDataStream
    MiniDumpType.WithFullMemoryInfo: 16,  # MemoryInfoListStream
    MiniDumpType.WithThreadInfo: 17,  # ThreadInfoListStream
    MiniDumpType.WithTokenInformation: 19,  # TokenStream
}


def streams_for_mask(mask: int) -> Dict[int, str]:
    """Stream type -> the flag that asks for it, for every stream *mask* obliges dbghelp to write."""
    return {stream: flag.name or "" for flag, stream in MINIDUMP_FLAG_STREAMS.items() if mask & flag}


def mask_has_full_memory(mask: int) -> bool:
    """Whether *mask* asks for all of the process's memory."""
    return bool(mask & MiniDumpType.WithFullMemory)


def describe_mask(mask: int) -> str:
    """``0x61826 (WithFullMemory|WithHandleData|...)`` for messages and docs."""
    names = [m.name or "" for m in MiniDumpType if m.value and mask & m.value]
    return f"0x{mask:X} ({'|'.join(names) if names else 'Normal'})"
