"""The snapshot path's structures, flags, access and dbghelp answer are the documented ones, for a
32-bit and a 64-bit process alike (pure ctypes: runs on Linux too).

Expected values are the Windows SDK's (processsnapshot.h, psapi.h, sysinfoapi.h, winnt.h,
dbghelp.h) and Microsoft's "Generate Dump File from a Process Snapshot" sample, written out here
as numbers; never derived from the code under test.
"""
import ctypes
import re

import pytest

from dumplib._windows import snapshot
from dumplib._windows.policy import AMD64, ARM64, I386
from dumplib.kinds import DumpKind
from dumplib._windows.masks import windows_mask

# name -> {bits: (sizeof, {field: offset})}, as MSVC lays them out for x86 and x64.
DOCUMENTED = {
    "PSS_VA_CLONE_INFORMATION": {32: (4, {"VaCloneHandle": 0}), 64: (8, {"VaCloneHandle": 0})},
    "PROCESS_MEMORY_COUNTERS_EX": {
        32: (44, {"cb": 0, "PageFaultCount": 4, "PeakWorkingSetSize": 8, "WorkingSetSize": 12,
                  "QuotaPeakPagedPoolUsage": 16, "QuotaPagedPoolUsage": 20, "QuotaPeakNonPagedPoolUsage": 24,
                  "QuotaNonPagedPoolUsage": 28, "PagefileUsage": 32, "PeakPagefileUsage": 36, "PrivateUsage": 40}),
        64: (80, {"cb": 0, "PageFaultCount": 4, "PeakWorkingSetSize": 8, "WorkingSetSize": 16,
                  "QuotaPeakPagedPoolUsage": 24, "QuotaPagedPoolUsage": 32, "QuotaPeakNonPagedPoolUsage": 40,
                  "QuotaNonPagedPoolUsage": 48, "PagefileUsage": 56, "PeakPagefileUsage": 64, "PrivateUsage": 72}),
    },
    "MEMORYSTATUSEX": {
        b: (64, {"dwLength": 0, "dwMemoryLoad": 4, "ullTotalPhys": 8, "ullAvailPhys": 16, "ullTotalPageFile": 24,
                 "ullAvailPageFile": 32, "ullTotalVirtual": 40, "ullAvailVirtual": 48,
                 "ullAvailExtendedVirtual": 56})
        for b in (32, 64)
    },
}
CASES = [(name, bits) for name in DOCUMENTED for bits in (32, 64)]


@pytest.mark.parametrize("name, bits", CASES, ids=[f"{n}-{b}" for n, b in CASES])
def test_snapshot_structure_has_the_documented_size_and_offsets(name, bits):
    size, offsets = DOCUMENTED[name][bits]
    cls = getattr(snapshot.declare(bits), name)
    assert ctypes.sizeof(cls) == size
    assert {f[0]: getattr(cls, f[0]).offset for f in cls._fields_} == offsets


def test_every_snapshot_structure_is_checked_and_the_bindings_use_this_interpreters_layout():
    assert {k for k in vars(snapshot.declare(64)) if k != "bits"} == set(DOCUMENTED)
    bits = 8 * ctypes.sizeof(ctypes.c_void_p)
    for name in DOCUMENTED:
        assert ctypes.sizeof(getattr(snapshot.NATIVE, name)) == DOCUMENTED[name][bits][0], name


def test_flag_and_callback_values_are_the_headers():
    # processsnapshot.h PSS_CAPTURE_FLAGS / PSS_QUERY_INFORMATION_CLASS; dbghelp.h; winerror.h; winnt.h.
    assert (snapshot.PSS_CAPTURE_VA_CLONE, snapshot.PSS_CAPTURE_HANDLES, snapshot.PSS_CAPTURE_HANDLE_NAME_INFORMATION,
            snapshot.PSS_CAPTURE_HANDLE_BASIC_INFORMATION, snapshot.PSS_CAPTURE_HANDLE_TYPE_SPECIFIC_INFORMATION,
            snapshot.PSS_CAPTURE_HANDLE_TRACE, snapshot.PSS_CAPTURE_THREADS, snapshot.PSS_CAPTURE_THREAD_CONTEXT,
            snapshot.PSS_CAPTURE_THREAD_CONTEXT_EXTENDED, snapshot.PSS_CAPTURE_VA_SPACE,
            snapshot.PSS_CAPTURE_VA_SPACE_SECTION_INFORMATION) == (
        0x1, 0x4, 0x8, 0x10, 0x20, 0x40, 0x80, 0x100, 0x200, 0x800, 0x1000)
    assert (snapshot.PSS_CREATE_BREAKAWAY_OPTIONAL, snapshot.PSS_CREATE_BREAKAWAY,
            snapshot.PSS_CREATE_USE_VM_ALLOCATIONS, snapshot.PSS_CREATE_RELEASE_SECTION) == (
        0x04000000, 0x08000000, 0x20000000, 0x80000000)
    assert snapshot.PSS_QUERY_VA_CLONE_INFORMATION == 1
    assert snapshot.IsProcessSnapshotCallback == 16 and snapshot.S_FALSE == 1
    assert (snapshot.PROCESS_CREATE_PROCESS, snapshot.PROCESS_DUP_HANDLE, snapshot.PROCESS_VM_READ,
            snapshot.PROCESS_QUERY_INFORMATION) == (0x80, 0x40, 0x10, 0x400)


# Microsoft's sample capture set: VA clone, every handle flag, threads with (extended) contexts,
# breakaway (optional), VM allocations, release section: 0x7D | 0x380 | 0xAC000000.
MICROSOFT_SAMPLE = 0xAC0003FD


def test_a_kind_with_handle_data_captures_what_microsofts_sample_does_plus_the_memory_map():
    mini = windows_mask(DumpKind.MINI)  # HandleData and FullMemoryInfo
    assert snapshot.capture_flags(mini) == MICROSOFT_SAMPLE | 0x800 | 0x1000


def test_a_kind_without_handles_or_memory_map_captures_threads_and_contexts_only():
    assert snapshot.capture_flags(0x2) == 0xAC000381  # WithFullMemory alone: VA clone, threads, contexts, create flags
    triage = windows_mask(DumpKind.TRIAGE)
    expected = 0xAC000381 | (0x7C if triage & 0x4 else 0) | (0x1800 if triage & 0x800 else 0)
    assert snapshot.capture_flags(triage) == expected


def test_breakaway_optional_always_goes_with_breakaway():
    # Documented: BREAKAWAY_OPTIONAL must be combined with BREAKAWAY and/or FORCE_BREAKAWAY.
    for mask in (0, 0x2, windows_mask(DumpKind.MINI), windows_mask(DumpKind.FULL)):
        flags = snapshot.capture_flags(mask)
        assert flags & 0x04000000 and flags & 0x08000000
        assert not flags & 0x10000000  # FORCE_BREAKAWAY is for Tcb-privileged callers only


@pytest.mark.parametrize("machine, value", [(AMD64, 0x0010001F), (I386, 0x0001003F), (ARM64, 0x0040001F)])
def test_thread_contexts_are_captured_with_context_all_of_the_dumpers_machine(machine, value):
    assert snapshot.context_flags(machine) == value


PROCESS_VM_OPERATION, PROCESS_VM_WRITE, PROCESS_ALL_ACCESS = 0x8, 0x20, 0x1FFFFF


def test_the_snapshot_asks_for_create_process_and_reads_duplicating_handles_only_for_handle_data():
    with_handles = windows_mask(DumpKind.MINI)
    assert snapshot.snapshot_access(with_handles) == 0x80 | 0x400 | 0x10 | 0x40
    assert snapshot.snapshot_access(0x2) == 0x80 | 0x400 | 0x10  # full memory, no handle stream
    for mask in (0x2, with_handles, windows_mask(DumpKind.FULL)):
        access = snapshot.snapshot_access(mask)
        assert not access & (PROCESS_VM_OPERATION | PROCESS_VM_WRITE) and access != PROCESS_ALL_ACCESS


def test_is_process_snapshot_callback_is_answered_with_status_s_false_at_offset_0():
    # MINIDUMP_CALLBACK_OUTPUT is a union: Status (an HRESULT) sits at offset 0, like every member.
    out = (ctypes.c_ubyte * 64)(*([0xAA] * 64))
    assert snapshot.answer_callback(16, ctypes.addressof(out)) is True
    assert ctypes.c_int32.from_buffer(out).value == 1
    assert bytes(out[4:]) == b"\xAA" * 60


@pytest.mark.parametrize("callback_type", [0, 6, 15, 17])  # Module, Cancel, IoFinish, VmStart
def test_other_callbacks_are_left_to_the_monitor(callback_type):
    out = (ctypes.c_ubyte * 16)(*([0xAA] * 16))
    assert snapshot.answer_callback(callback_type, ctypes.addressof(out)) is False
    assert bytes(out) == b"\xAA" * 16


GIB, MIB = 1 << 30, 1 << 20


def test_commit_that_can_hold_the_clone_and_the_spare_is_enough():
    assert snapshot.commit_shortfall(1 * GIB, 4 * GIB, 16 * GIB) is None
    # Spare is 5% of the limit (819 MiB here): 1024 + 819 <= 1843 exactly fits.
    assert snapshot.commit_shortfall(1 * GIB, 1 * GIB + 16 * GIB // 20, 16 * GIB) is None


def test_commit_too_small_for_the_clone_says_so_with_figures():
    why = snapshot.commit_shortfall(1 * GIB, 1 * GIB + 16 * GIB // 20 - 1, 16 * GIB)
    assert why is not None
    assert "1024 MiB" in why and "16384 MiB" in why and "819 MiB spare" in why
    # A small system keeps at least 256 MiB spare.
    why = snapshot.commit_shortfall(100 * MIB, 300 * MIB, 2 * GIB)
    assert why is not None and "256 MiB spare" in why and "300 MiB" in why


def test_api_md_names_the_snapshot_access_and_commit_spare_the_code_uses():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text(encoding="utf-8")
    note = " ".join(text.split("- **Snapshots**", 1)[1].split("\n  - **", 1)[0].split())
    access = re.search(r"`OpenProcess` asks for `([A-Z_| ]+)`, plus `([A-Z_]+)` when handles are captured", note)
    assert access, note
    names = [n.strip() for n in access.group(1).split("|")]
    assert sum(getattr(snapshot, n) for n in names) == snapshot.snapshot_access(0x2)  # no handle data
    assert snapshot.snapshot_access(0x4) == snapshot.snapshot_access(0x2) | getattr(snapshot, access.group(2))
    assert f"{100 // snapshot.COMMIT_SPARE_SHARE}% of the commit limit, at least" \
           f" {snapshot.COMMIT_SPARE_FLOOR >> 20} MiB" in note
    assert "`IsProcessSnapshotCallback` with `S_FALSE`" in note and "reason `snapshot-unavailable`" in note
