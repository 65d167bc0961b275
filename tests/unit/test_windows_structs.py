"""Every structure dumplib hands to Windows has the documented size and field offsets, for a 32-bit
and for a 64-bit process alike (pure ctypes: runs on Linux too).

The expected values are the Windows SDK's (winnt.h, tlhelp32.h, minwinbase.h, dbghelp.h with
pshpack4), as printed by sizeof/offsetof under MSVC for x86 and x64; not derived from our code.
"""
import ctypes

import pytest

from dumplib._windows.structs import NATIVE, declare

# name -> {bits: (sizeof, {field: offset})}
DOCUMENTED = {
    "MEMORY_BASIC_INFORMATION": {
        32: (28, {"BaseAddress": 0, "AllocationBase": 4, "AllocationProtect": 8, "RegionSize": 12, "State": 16,
                  "Protect": 20, "Type": 24}),
        64: (48, {"BaseAddress": 0, "AllocationBase": 8, "AllocationProtect": 16, "PartitionId": 20,
                  "RegionSize": 24, "State": 32, "Protect": 36, "Type": 40}),
    },
    "SECURITY_ATTRIBUTES": {
        32: (12, {"nLength": 0, "lpSecurityDescriptor": 4, "bInheritHandle": 8}),
        64: (24, {"nLength": 0, "lpSecurityDescriptor": 8, "bInheritHandle": 16}),
    },
    "PROCESSENTRY32W": {
        32: (556, {"dwSize": 0, "cntUsage": 4, "th32ProcessID": 8, "th32DefaultHeapID": 12, "th32ModuleID": 16,
                   "cntThreads": 20, "th32ParentProcessID": 24, "pcPriClassBase": 28, "dwFlags": 32,
                   "szExeFile": 36}),
        64: (568, {"dwSize": 0, "cntUsage": 4, "th32ProcessID": 8, "th32DefaultHeapID": 16, "th32ModuleID": 24,
                   "cntThreads": 28, "th32ParentProcessID": 32, "pcPriClassBase": 36, "dwFlags": 40,
                   "szExeFile": 44}),
    },
    "FILETIME": {b: (8, {"dwLowDateTime": 0, "dwHighDateTime": 4}) for b in (32, 64)},
    "BY_HANDLE_FILE_INFORMATION": {b: (52, {"dwFileAttributes": 0, "ftCreationTime": 4, "ftLastAccessTime": 12,
                                            "ftLastWriteTime": 20, "dwVolumeSerialNumber": 28, "nFileSizeHigh": 32,
                                            "nFileSizeLow": 36, "nNumberOfLinks": 40, "nFileIndexHigh": 44,
                                            "nFileIndexLow": 48}) for b in (32, 64)},
    "ACE_HEADER": {b: (4, {"AceType": 0, "AceFlags": 1, "AceSize": 2}) for b in (32, 64)},
    "ACCESS_ALLOWED_ACE": {b: (12, {"Header": 0, "Mask": 4, "SidStart": 8}) for b in (32, 64)},
    "ACL_SIZE_INFORMATION": {b: (12, {"AceCount": 0, "AclBytesInUse": 4, "AclBytesFree": 8}) for b in (32, 64)},
    "LUID": {b: (8, {"LowPart": 0, "HighPart": 4}) for b in (32, 64)},
    "LUID_AND_ATTRIBUTES": {b: (12, {"Luid": 0, "Attributes": 8}) for b in (32, 64)},
    "TOKEN_PRIVILEGES": {b: (16, {"PrivilegeCount": 0, "Privileges": 4}) for b in (32, 64)},
    "SID_AND_ATTRIBUTES": {
        32: (8, {"Sid": 0, "Attributes": 4}),
        64: (16, {"Sid": 0, "Attributes": 8}),
    },
    "MINIDUMP_USER_STREAM": {
        32: (12, {"Type": 0, "BufferSize": 4, "Buffer": 8}),
        64: (16, {"Type": 0, "BufferSize": 4, "Buffer": 8}),
    },
    "MINIDUMP_USER_STREAM_INFORMATION": {
        32: (8, {"UserStreamCount": 0, "UserStreamArray": 4}),
        64: (12, {"UserStreamCount": 0, "UserStreamArray": 4}),
    },
    # Only the head is declared (dumplib reads CallbackType); the union follows it.
    "MINIDUMP_CALLBACK_INPUT": {
        32: (12, {"ProcessId": 0, "ProcessHandle": 4, "CallbackType": 8}),
        64: (16, {"ProcessId": 0, "ProcessHandle": 4, "CallbackType": 12}),
    },
    "MINIDUMP_CALLBACK_OUTPUT_CANCEL": {b: (8, {"CheckCancel": 0, "Cancel": 4}) for b in (32, 64)},
    "MINIDUMP_CALLBACK_INFORMATION": {
        32: (8, {"CallbackRoutine": 0, "CallbackParam": 4}),
        64: (16, {"CallbackRoutine": 0, "CallbackParam": 8}),
    },
}

CASES = [(name, bits) for name in DOCUMENTED for bits in (32, 64)]


@pytest.mark.parametrize("name, bits", CASES, ids=[f"{n}-{b}" for n, b in CASES])
def test_structure_has_the_documented_size_and_offsets(name, bits):
    size, offsets = DOCUMENTED[name][bits]
    cls = getattr(declare(bits), name)
    assert ctypes.sizeof(cls) == size
    assert {f[0]: getattr(cls, f[0]).offset for f in cls._fields_} == offsets


def test_every_declared_structure_is_checked():
    declared = {k for k in vars(declare(64)) if k != "bits"}
    assert declared == set(DOCUMENTED)


def test_32_bit_memory_basic_information_has_no_partition_id():
    # The bug this guards: PartitionId declared unconditionally put RegionSize at 16 on x86.
    assert "PartitionId" not in [f[0] for f in declare(32).MEMORY_BASIC_INFORMATION._fields_]


def test_the_bindings_use_the_layout_of_this_interpreter():
    bits = 8 * ctypes.sizeof(ctypes.c_void_p)
    assert NATIVE.bits == bits
    for name in DOCUMENTED:
        assert ctypes.sizeof(getattr(NATIVE, name)) == DOCUMENTED[name][bits][0], name
