"""advapi32.dll: token, privilege and security-descriptor prototypes only."""
from __future__ import annotations

import ctypes
from ctypes import wintypes as wt
from functools import partial

from ._common import check_bool, prototype

_dll = ctypes.WinDLL("advapi32", use_last_error=True)
_proto = partial(prototype, _dll)

TOKEN_QUERY = 0x0008
TOKEN_ADJUST_PRIVILEGES = 0x0020
SE_PRIVILEGE_ENABLED = 0x00000002
SE_DEBUG_NAME = "SeDebugPrivilege"
TokenUser = 1
TokenPrivileges = 3
SDDL_REVISION_1 = 1


class LUID(ctypes.Structure):
    _fields_ = [("LowPart", wt.DWORD), ("HighPart", wt.LONG)]


class LUID_AND_ATTRIBUTES(ctypes.Structure):
    _fields_ = [("Luid", LUID), ("Attributes", wt.DWORD)]


class TOKEN_PRIVILEGES(ctypes.Structure):
    # One privilege is all dumplib ever adjusts.
    _fields_ = [("PrivilegeCount", wt.DWORD), ("Privileges", LUID_AND_ATTRIBUTES * 1)]


class SID_AND_ATTRIBUTES(ctypes.Structure):
    _fields_ = [("Sid", ctypes.c_void_p), ("Attributes", wt.DWORD)]


OpenProcessToken = _proto("OpenProcessToken", wt.BOOL, [wt.HANDLE, wt.DWORD, ctypes.POINTER(wt.HANDLE)], check_bool)
LookupPrivilegeValueW = _proto(
    "LookupPrivilegeValueW", wt.BOOL, [wt.LPCWSTR, wt.LPCWSTR, ctypes.POINTER(LUID)], check_bool
)
# Success with ERROR_NOT_ALL_ASSIGNED means "not held": the wrapper reads the last error itself.
AdjustTokenPrivileges = _proto(
    "AdjustTokenPrivileges",
    wt.BOOL,
    [wt.HANDLE, wt.BOOL, ctypes.POINTER(TOKEN_PRIVILEGES), wt.DWORD, ctypes.c_void_p, ctypes.POINTER(wt.DWORD)],
    check_bool,
)
# Called first with a too-small buffer to learn the size, so failure is the wrapper's to judge.
GetTokenInformation = _proto(
    "GetTokenInformation", wt.BOOL, [wt.HANDLE, ctypes.c_int, ctypes.c_void_p, wt.DWORD, ctypes.POINTER(wt.DWORD)]
)
ConvertSidToStringSidW = _proto(
    "ConvertSidToStringSidW", wt.BOOL, [ctypes.c_void_p, ctypes.POINTER(wt.LPWSTR)], check_bool
)
ConvertStringSecurityDescriptorToSecurityDescriptorW = _proto(
    "ConvertStringSecurityDescriptorToSecurityDescriptorW",
    wt.BOOL,
    [wt.LPCWSTR, wt.DWORD, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(wt.ULONG)],
    check_bool,
)
