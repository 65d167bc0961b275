"""advapi32.dll: token, privilege and security-descriptor prototypes only."""
from __future__ import annotations

import sys

# Windows only (ctypes.WinDLL).
if sys.platform != "win32":  # survives python -O, unlike the assert below
    raise ImportError(f"{__name__} is Windows only")
assert sys.platform == "win32"  # tells type checkers on other platforms to skip this module

import ctypes
from ctypes import wintypes as wt
from functools import partial

from ._common import check_bool, check_handle, check_status, prototype
from .structs import NATIVE

_dll = ctypes.WinDLL("advapi32", use_last_error=True)
_proto = partial(prototype, _dll)

TOKEN_QUERY = 0x0008
TOKEN_ADJUST_PRIVILEGES = 0x0020
SE_PRIVILEGE_ENABLED = 0x00000002
TokenUser = 1
TokenPrivileges = 3
SDDL_REVISION_1 = 1
SE_FILE_OBJECT = 1
OWNER_SECURITY_INFORMATION = 0x1
DACL_SECURITY_INFORMATION = 0x4
#: GetAclInformation's class for ACL_SIZE_INFORMATION.
AclSizeInformation = 2
#: ACE_HEADER.AceType values (winnt.h) a file's DACL can hold.
ACCESS_ALLOWED_ACE_TYPE = 0x0
ACCESS_DENIED_ACE_TYPE = 0x1
ACCESS_ALLOWED_CALLBACK_ACE_TYPE = 0x9
ACCESS_DENIED_CALLBACK_ACE_TYPE = 0xA
#: ACE_HEADER.AceFlags: the ACE is only handed down to children, it does not apply to the object itself.
INHERIT_ONLY_ACE = 0x08


ACE_HEADER = NATIVE.ACE_HEADER
ACCESS_ALLOWED_ACE = NATIVE.ACCESS_ALLOWED_ACE
ACL_SIZE_INFORMATION = NATIVE.ACL_SIZE_INFORMATION
LUID = NATIVE.LUID
LUID_AND_ATTRIBUTES = NATIVE.LUID_AND_ATTRIBUTES
TOKEN_PRIVILEGES = NATIVE.TOKEN_PRIVILEGES
SID_AND_ATTRIBUTES = NATIVE.SID_AND_ATTRIBUTES

OpenProcessToken = _proto("OpenProcessToken", wt.BOOL, [wt.HANDLE, wt.DWORD, ctypes.POINTER(wt.HANDLE)], check_bool)
LookupPrivilegeValueW = _proto(
    "LookupPrivilegeValueW", wt.BOOL, [wt.LPCWSTR, wt.LPCWSTR, ctypes.POINTER(LUID)], check_bool
)
# Success with ERROR_NOT_ALL_ASSIGNED means "not held": the wrapper reads the last error itself.
AdjustTokenPrivileges = _proto(
    "AdjustTokenPrivileges",
    wt.BOOL,
    [wt.HANDLE, wt.BOOL, ctypes.POINTER(TOKEN_PRIVILEGES), wt.DWORD, ctypes.POINTER(TOKEN_PRIVILEGES),
     ctypes.POINTER(wt.DWORD)],
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

# Returns a Win32 error code itself (not through GetLastError): the wrapper checks it.
GetNamedSecurityInfoW = _proto(
    "GetNamedSecurityInfoW",
    wt.DWORD,
    [wt.LPCWSTR, ctypes.c_int, wt.DWORD, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
     ctypes.POINTER(ctypes.c_void_p)],
)
# The security descriptor of an open handle (the file itself, not what its name leads to now). Returns a
# Win32 error code itself; *ppSecurityDescriptor is LocalAlloc'd, the owner and DACL pointers point into it.
GetSecurityInfo = _proto(
    "GetSecurityInfo",
    wt.DWORD,
    [wt.HANDLE, ctypes.c_int, wt.DWORD, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p),
     ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p)],
    check_status,
)
GetSecurityDescriptorOwner = _proto(
    "GetSecurityDescriptorOwner", wt.BOOL, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(wt.BOOL)],
    check_bool,
)
GetSecurityDescriptorDacl = _proto(
    "GetSecurityDescriptorDacl", wt.BOOL,
    [ctypes.c_void_p, ctypes.POINTER(wt.BOOL), ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(wt.BOOL)], check_bool,
)
GetAclInformation = _proto("GetAclInformation", wt.BOOL, [ctypes.c_void_p, ctypes.c_void_p, wt.DWORD, ctypes.c_int],
                           check_bool)
GetAce = _proto("GetAce", wt.BOOL, [ctypes.c_void_p, wt.DWORD, ctypes.POINTER(ctypes.c_void_p)], check_bool)
ConvertSecurityDescriptorToStringSecurityDescriptorW = _proto(
    "ConvertSecurityDescriptorToStringSecurityDescriptorW",
    wt.BOOL,
    [ctypes.c_void_p, wt.DWORD, wt.DWORD, ctypes.POINTER(wt.LPWSTR), ctypes.POINTER(wt.ULONG)],
    check_bool,
)

# -- the service control manager: a service's process id ---------------------------------------------
SC_MANAGER_CONNECT = 0x0001
SERVICE_QUERY_STATUS = 0x0004
SC_STATUS_PROCESS_INFO = 0
SERVICE_STOPPED = 1
ERROR_SERVICE_DOES_NOT_EXIST = 1060
#: OpenServiceW's answer for a name no service can have (empty, or with a slash).
ERROR_INVALID_NAME = 123
SC_HANDLE = wt.HANDLE


class SERVICE_STATUS_PROCESS(ctypes.Structure):
    _fields_ = [(name, wt.DWORD) for name in (
        "dwServiceType", "dwCurrentState", "dwControlsAccepted", "dwWin32ExitCode", "dwServiceSpecificExitCode",
        "dwCheckPoint", "dwWaitHint", "dwProcessId", "dwServiceFlags")]


OpenSCManagerW = _proto("OpenSCManagerW", SC_HANDLE, [wt.LPCWSTR, wt.LPCWSTR, wt.DWORD], check_handle)
OpenServiceW = _proto("OpenServiceW", SC_HANDLE, [SC_HANDLE, wt.LPCWSTR, wt.DWORD], check_handle)
QueryServiceStatusEx = _proto(
    "QueryServiceStatusEx", wt.BOOL, [SC_HANDLE, ctypes.c_int, ctypes.c_void_p, wt.DWORD, ctypes.POINTER(wt.DWORD)],
    check_bool,
)
CloseServiceHandle = _proto("CloseServiceHandle", wt.BOOL, [SC_HANDLE], check_bool)
