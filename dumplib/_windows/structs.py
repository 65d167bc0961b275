"""Every Win32 structure dumplib passes to Windows, declared for 32- and for 64-bit processes.

A structure's layout follows the *caller's* bitness (winnt.h: ``PartitionId`` exists only under
``_WIN64``; pointers, SIZE_T and HANDLE are 4 or 8 bytes). Declaring both from one description,
with pointer-sized fields as plain integers of the right width, lets the unit tests check every
size and offset of both layouts on any OS (this module imports no DLL), and the bindings use
``NATIVE``, the very classes those tests check.
"""
from __future__ import annotations

import ctypes
from types import SimpleNamespace
from typing import Any, Dict, List, Tuple, Type

MAX_PATH = 260

_Fields = List[Tuple[str, Any]]


def _struct(name: str, fields: _Fields, pack: int = 0) -> Type[ctypes.Structure]:
    namespace: Dict[str, object] = {"_fields_": fields}
    if pack:
        # dbghelp.h wraps its structures in pshpack4.h; "ms" says the MSVC rules apply on every OS.
        namespace["_pack_"] = pack
        namespace["_layout_"] = "ms"
    return type(name, (ctypes.Structure,), namespace)


def declare(bits: int) -> SimpleNamespace:
    """The structures as a *bits*-bit Windows process lays them out."""
    if bits not in (32, 64):
        raise ValueError(f"Windows processes are 32- or 64-bit, not {bits}-bit")
    ptr = ctypes.c_uint64 if bits == 64 else ctypes.c_uint32  # PVOID, HANDLE, SIZE_T, ULONG_PTR
    dword, word, long_ = ctypes.c_uint32, ctypes.c_uint16, ctypes.c_int32
    bool_ = ctypes.c_int32  # Win32 BOOL is a 4-byte int

    mbi: _Fields = [("BaseAddress", ptr), ("AllocationBase", ptr), ("AllocationProtect", dword)]
    if bits == 64:
        mbi.append(("PartitionId", word))  # winnt.h: #if defined(_WIN64)
    mbi += [("RegionSize", ptr), ("State", dword), ("Protect", dword), ("Type", dword)]

    luid = _struct("LUID", [("LowPart", dword), ("HighPart", long_)])
    luid_and_attributes = _struct("LUID_AND_ATTRIBUTES", [("Luid", luid), ("Attributes", dword)])
    filetime = _struct("FILETIME", [("dwLowDateTime", dword), ("dwHighDateTime", dword)])
    ace_header = _struct("ACE_HEADER", [("AceType", ctypes.c_uint8), ("AceFlags", ctypes.c_uint8), ("AceSize", word)])
    user_stream = _struct(
        "MINIDUMP_USER_STREAM", [("Type", dword), ("BufferSize", dword), ("Buffer", ptr)], pack=4
    )
    return SimpleNamespace(
        bits=bits,
        MEMORY_BASIC_INFORMATION=_struct("MEMORY_BASIC_INFORMATION", mbi),
        SECURITY_ATTRIBUTES=_struct(
            "SECURITY_ATTRIBUTES", [("nLength", dword), ("lpSecurityDescriptor", ptr), ("bInheritHandle", bool_)]
        ),
        PROCESSENTRY32W=_struct(
            "PROCESSENTRY32W",
            [
                ("dwSize", dword),
                ("cntUsage", dword),
                ("th32ProcessID", dword),
                ("th32DefaultHeapID", ptr),
                ("th32ModuleID", dword),
                ("cntThreads", dword),
                ("th32ParentProcessID", dword),
                ("pcPriClassBase", long_),
                ("dwFlags", dword),
                ("szExeFile", ctypes.c_wchar * MAX_PATH if ctypes.sizeof(ctypes.c_wchar) == 2 else word * MAX_PATH),
            ],
        ),
        FILETIME=filetime,
        BY_HANDLE_FILE_INFORMATION=_struct(
            "BY_HANDLE_FILE_INFORMATION",
            [("dwFileAttributes", dword), ("ftCreationTime", filetime), ("ftLastAccessTime", filetime),
             ("ftLastWriteTime", filetime), ("dwVolumeSerialNumber", dword), ("nFileSizeHigh", dword),
             ("nFileSizeLow", dword), ("nNumberOfLinks", dword), ("nFileIndexHigh", dword), ("nFileIndexLow", dword)],
        ),
        ACE_HEADER=ace_header,
        # ACCESS_ALLOWED_ACE, and every ACE laid out like it (denied, and their callback forms): the SID
        # starts at SidStart.
        ACCESS_ALLOWED_ACE=_struct("ACCESS_ALLOWED_ACE", [("Header", ace_header), ("Mask", dword), ("SidStart", dword)]),
        ACL_SIZE_INFORMATION=_struct(
            "ACL_SIZE_INFORMATION", [("AceCount", dword), ("AclBytesInUse", dword), ("AclBytesFree", dword)]
        ),
        LUID=luid,
        LUID_AND_ATTRIBUTES=luid_and_attributes,
        # One privilege is all dumplib ever adjusts.
        TOKEN_PRIVILEGES=_struct(
            "TOKEN_PRIVILEGES", [("PrivilegeCount", dword), ("Privileges", luid_and_attributes * 1)]
        ),
        SID_AND_ATTRIBUTES=_struct("SID_AND_ATTRIBUTES", [("Sid", ptr), ("Attributes", dword)]),
        MINIDUMP_USER_STREAM=user_stream,
        MINIDUMP_USER_STREAM_INFORMATION=_struct(
            "MINIDUMP_USER_STREAM_INFORMATION", [("UserStreamCount", dword), ("UserStreamArray", ptr)], pack=4
        ),
        # Only the fixed head is declared: dumplib reads CallbackType and nothing from the union.
        MINIDUMP_CALLBACK_INPUT=_struct(
            "MINIDUMP_CALLBACK_INPUT", [("ProcessId", dword), ("ProcessHandle", ptr), ("CallbackType", dword)], pack=4
        ),
        # The union member a CancelCallback fills: {BOOL CheckCancel; BOOL Cancel}.
        MINIDUMP_CALLBACK_OUTPUT_CANCEL=_struct(
            "MINIDUMP_CALLBACK_OUTPUT_CANCEL", [("CheckCancel", bool_), ("Cancel", bool_)], pack=4
        ),
        MINIDUMP_CALLBACK_INFORMATION=_struct(
            "MINIDUMP_CALLBACK_INFORMATION", [("CallbackRoutine", ptr), ("CallbackParam", ptr)], pack=4
        ),
    )


#: The layouts of the running interpreter's own bitness: what the bindings pass to Windows.
NATIVE = declare(8 * ctypes.sizeof(ctypes.c_void_p))
