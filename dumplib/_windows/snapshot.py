"""Process snapshots (PSS, Windows 8.1+): what to capture, with which access, and whether it fits.

Pure logic and ctypes layouts only, no DLL, so the unit tests check every flag, access mask,
structure offset and the dbghelp callback's answer on any OS and for both bitnesses. The
bindings live in kernel32.py; the backend takes the snapshot.

Why a snapshot: PssCaptureSnapshot with PSS_CAPTURE_VA_CLONE makes a copy-on-write clone of the
target's address space and records its threads (and their registers) and handles; the target is
suspended only while that is taken. MiniDumpWriteDump then reads the snapshot, not the target,
which runs on while the dump is written, compressed and hashed.
"""
from __future__ import annotations

import ctypes
from types import SimpleNamespace
from typing import Optional

from .policy import CONTEXT_LAYOUTS
from .structs import _struct

# PSS_CAPTURE_FLAGS (processsnapshot.h).
PSS_CAPTURE_VA_CLONE = 0x00000001
PSS_CAPTURE_HANDLES = 0x00000004
PSS_CAPTURE_HANDLE_NAME_INFORMATION = 0x00000008
PSS_CAPTURE_HANDLE_BASIC_INFORMATION = 0x00000010
PSS_CAPTURE_HANDLE_TYPE_SPECIFIC_INFORMATION = 0x00000020
PSS_CAPTURE_HANDLE_TRACE = 0x00000040
PSS_CAPTURE_THREADS = 0x00000080
PSS_CAPTURE_THREAD_CONTEXT = 0x00000100
PSS_CAPTURE_THREAD_CONTEXT_EXTENDED = 0x00000200
PSS_CAPTURE_VA_SPACE = 0x00000800
PSS_CAPTURE_VA_SPACE_SECTION_INFORMATION = 0x00001000
PSS_CREATE_BREAKAWAY_OPTIONAL = 0x04000000
PSS_CREATE_BREAKAWAY = 0x08000000
PSS_CREATE_USE_VM_ALLOCATIONS = 0x20000000
PSS_CREATE_RELEASE_SECTION = 0x80000000

# PSS_QUERY_INFORMATION_CLASS: PSS_QUERY_VA_CLONE_INFORMATION answers a PSS_VA_CLONE_INFORMATION.
PSS_QUERY_VA_CLONE_INFORMATION = 1

# MINIDUMP_CALLBACK_TYPE IsProcessSnapshotCallback (dbghelp.h); answered with Status = S_FALSE.
IsProcessSnapshotCallback = 16
S_FALSE = 1

# Process access rights (winnt.h).
PROCESS_CREATE_PROCESS = 0x0080
PROCESS_DUP_HANDLE = 0x0040
PROCESS_VM_READ = 0x0010
PROCESS_QUERY_INFORMATION = 0x0400

# MiniDumpType bits that decide what the snapshot must hold (masks.MiniDumpType, repeated to keep
# this module free of the package's imports).
_WITH_HANDLE_DATA = 0x00000004
_WITH_FULL_MEMORY_INFO = 0x00000800

#: What every snapshot dump captures. The thread list of any minidump holds each thread's
#: registers (THREAD_CONTEXT, and _EXTENDED for the XSTATE/AVX part); BREAKAWAY puts the clone
#: outside the target's job, so its commit is not charged against the job's limit (OPTIONAL: stay
#: in the job where breaking away is not allowed; documented to go with BREAKAWAY);
#: USE_VM_ALLOCATIONS keeps PSS off this process's heap; RELEASE_SECTION: the clone holds no
#: reference to the image files, which stay deletable and replaceable while the dump is written.
BASE_CAPTURE = (
    PSS_CAPTURE_VA_CLONE
    | PSS_CAPTURE_THREADS
    | PSS_CAPTURE_THREAD_CONTEXT
    | PSS_CAPTURE_THREAD_CONTEXT_EXTENDED
    | PSS_CREATE_BREAKAWAY
    | PSS_CREATE_BREAKAWAY_OPTIONAL
    | PSS_CREATE_USE_VM_ALLOCATIONS
    | PSS_CREATE_RELEASE_SECTION
)
#: The handle table with names, counts, access and type details: what MiniDumpWithHandleData writes.
HANDLE_CAPTURE = (
    PSS_CAPTURE_HANDLES
    | PSS_CAPTURE_HANDLE_NAME_INFORMATION
    | PSS_CAPTURE_HANDLE_BASIC_INFORMATION
    | PSS_CAPTURE_HANDLE_TYPE_SPECIFIC_INFORMATION
    | PSS_CAPTURE_HANDLE_TRACE
)
#: The memory map with each mapped file's name: what MiniDumpWithFullMemoryInfo writes.
VA_SPACE_CAPTURE = PSS_CAPTURE_VA_SPACE | PSS_CAPTURE_VA_SPACE_SECTION_INFORMATION


def capture_flags(mask: int) -> int:
    """PSS_CAPTURE_FLAGS for a dump written with MINIDUMP_TYPE *mask*: only what that dump holds."""
    flags = BASE_CAPTURE
    if mask & _WITH_HANDLE_DATA:
        flags |= HANDLE_CAPTURE
    if mask & _WITH_FULL_MEMORY_INFO:
        flags |= VA_SPACE_CAPTURE
    return flags


#: CONTEXT_ALL of each machine (policy.CONTEXT_LAYOUTS, from winnt.h). The dumper's own machine
#: decides, as the CONTEXT_ALL a C dumper is compiled with would.
CONTEXT_ALL = {machine: layout.all_flags for machine, layout in CONTEXT_LAYOUTS.items()}


def context_flags(dumper_machine: int) -> int:
    return CONTEXT_ALL[dumper_machine]


def snapshot_access(mask: int) -> int:
    """The access the snapshot path asks of the target, and no more.

    PSS_CAPTURE_VA_CLONE creates the clone as a child of the target: PROCESS_CREATE_PROCESS.
    Threads, contexts and the process's own information are queried (PROCESS_QUERY_INFORMATION)
    and read from its memory (PROCESS_VM_READ, which VA_SPACE_SECTION_INFORMATION and
    GetProcessMemoryInfo for the commit check document); the handle table is duplicated to be
    described (PROCESS_DUP_HANDLE) only when the dump holds handle data. MiniDumpWriteDump then
    reads the snapshot, never the target. Never PROCESS_ALL_ACCESS, never VM_WRITE or VM_OPERATION.
    """
    access = PROCESS_CREATE_PROCESS | PROCESS_QUERY_INFORMATION | PROCESS_VM_READ
    if mask & _WITH_HANDLE_DATA:
        access |= PROCESS_DUP_HANDLE
    return access


#: Commit left free after the clone: at least this, or 5% of the commit limit if that is more.
COMMIT_SPARE_FLOOR = 256 << 20
COMMIT_SPARE_SHARE = 20


def commit_shortfall(private_bytes: int, available: int, limit: int) -> Optional[str]:
    """Why the system's commit cannot hold a clone of a process with *private_bytes* of private
    commit (None: it can). PSS reserves commit for the clone's copy-on-write pages, about the
    target's private commit; dumplib never pushes the system to its commit limit to take it.

    *available* and *limit* are GlobalMemoryStatusEx's ullAvailPageFile and ullTotalPageFile.
    """
    spare = max(COMMIT_SPARE_FLOOR, limit // COMMIT_SPARE_SHARE)
    if private_bytes + spare <= available:
        return None
    mib = 1 << 20
    return (f"the clone would reserve about {private_bytes // mib} MiB of commit (the target's private"
            f" commit) and this system has {available // mib} MiB of commit available of"
            f" {limit // mib} MiB; dumplib keeps {spare // mib} MiB spare")


def answer_callback(callback_type: int, output_address: int) -> bool:
    """dbghelp asks whether the handle it was given is a process snapshot: Status = S_FALSE says it
    is (the documented answer). True when *callback_type* was that question and it is answered.

    *output_address* is the MINIDUMP_CALLBACK_OUTPUT, a union whose Status (an HRESULT) is at offset 0.
    """
    if callback_type != IsProcessSnapshotCallback:
        return False
    ctypes.c_int32.from_address(output_address).value = S_FALSE
    return True


def declare(bits: int) -> SimpleNamespace:
    """The structures the snapshot path passes to Windows, as a *bits*-bit process lays them out."""
    if bits not in (32, 64):
        raise ValueError(f"Windows processes are 32- or 64-bit, not {bits}-bit")
    ptr = ctypes.c_uint64 if bits == 64 else ctypes.c_uint32  # HANDLE, SIZE_T
    dword, ull = ctypes.c_uint32, ctypes.c_uint64
    counters = [("cb", dword), ("PageFaultCount", dword)] + [
        (name, ptr) for name in (
            "PeakWorkingSetSize", "WorkingSetSize", "QuotaPeakPagedPoolUsage", "QuotaPagedPoolUsage",
            "QuotaPeakNonPagedPoolUsage", "QuotaNonPagedPoolUsage", "PagefileUsage", "PeakPagefileUsage",
            "PrivateUsage",
        )
    ]
    return SimpleNamespace(
        bits=bits,
        PSS_VA_CLONE_INFORMATION=_struct("PSS_VA_CLONE_INFORMATION", [("VaCloneHandle", ptr)]),
        PROCESS_MEMORY_COUNTERS_EX=_struct("PROCESS_MEMORY_COUNTERS_EX", counters),
        MEMORYSTATUSEX=_struct(
            "MEMORYSTATUSEX",
            [("dwLength", dword), ("dwMemoryLoad", dword), ("ullTotalPhys", ull), ("ullAvailPhys", ull),
             ("ullTotalPageFile", ull), ("ullAvailPageFile", ull), ("ullTotalVirtual", ull),
             ("ullAvailVirtual", ull), ("ullAvailExtendedVirtual", ull)],
        ),
    )


#: The layouts of the running interpreter's own bitness: what the bindings pass to Windows.
NATIVE = declare(8 * ctypes.sizeof(ctypes.c_void_p))
