"""kernel32.dll: prototypes only, each with argtypes, restype and an errcheck raising Win32Error."""
from __future__ import annotations

import sys

# Windows only (ctypes.WinDLL).
if sys.platform != "win32":  # survives python -O, unlike the assert below
    raise ImportError(f"{__name__} is Windows only")
assert sys.platform == "win32"  # tells type checkers on other platforms to skip this module

import ctypes
from ctypes import wintypes as wt

from functools import partial

from ._common import check_bool, check_handle, check_nonzero, check_status, prototype
from .snapshot import NATIVE as _PSS
from .structs import MAX_PATH as MAX_PATH  # noqa: F401 - kernel32.MAX_PATH to its users, as windef.h has it
from .structs import NATIVE

_dll = ctypes.WinDLL("kernel32", use_last_error=True)

PROCESS_CREATE_PROCESS = 0x0080
PROCESS_DUP_HANDLE = 0x0040
PROCESS_VM_READ = 0x0010
PROCESS_QUERY_INFORMATION = 0x0400
PROCESS_QUERY_LIMITED_INFORMATION = 0x1000

GENERIC_READ = 0x80000000
GENERIC_WRITE = 0x40000000
READ_CONTROL = 0x00020000
FILE_READ_ATTRIBUTES = 0x80
FILE_SHARE_READ = 0x1
FILE_SHARE_WRITE = 0x2
FILE_SHARE_DELETE = 0x4
CREATE_NEW = 1
OPEN_EXISTING = 3
FILE_ATTRIBUTE_NORMAL = 0x80
FILE_ATTRIBUTE_DIRECTORY = 0x10
FILE_ATTRIBUTE_REPARSE_POINT = 0x400
#: CreateFileW: open a symbolic link or junction itself, never what it points at.
FILE_FLAG_OPEN_REPARSE_POINT = 0x00200000
#: CreateFileW: needed to open a directory.
FILE_FLAG_BACKUP_SEMANTICS = 0x02000000
FILE_TYPE_DISK = 0x1
FILE_BEGIN = 0

STILL_ACTIVE = 259
TH32CS_SNAPPROCESS = 0x2
IMAGE_FILE_MACHINE_UNKNOWN = 0
IMAGE_FILE_MACHINE_I386 = 0x014C
IMAGE_FILE_MACHINE_AMD64 = 0x8664
IMAGE_FILE_MACHINE_ARM64 = 0xAA64

LPSECURITY_ATTRIBUTES = ctypes.c_void_p


SECURITY_ATTRIBUTES = NATIVE.SECURITY_ATTRIBUTES
PROCESSENTRY32W = NATIVE.PROCESSENTRY32W
MEMORY_BASIC_INFORMATION = NATIVE.MEMORY_BASIC_INFORMATION
FILETIME = NATIVE.FILETIME
BY_HANDLE_FILE_INFORMATION = NATIVE.BY_HANDLE_FILE_INFORMATION
PSS_VA_CLONE_INFORMATION = _PSS.PSS_VA_CLONE_INFORMATION
PROCESS_MEMORY_COUNTERS_EX = _PSS.PROCESS_MEMORY_COUNTERS_EX
MEMORYSTATUSEX = _PSS.MEMORYSTATUSEX


_proto = partial(prototype, _dll)


OpenProcess = _proto("OpenProcess", wt.HANDLE, [wt.DWORD, wt.BOOL, wt.DWORD], check_handle)
CloseHandle = _proto("CloseHandle", wt.BOOL, [wt.HANDLE], check_bool)
GetCurrentProcess = _proto("GetCurrentProcess", wt.HANDLE, [])
GetCurrentProcessId = _proto("GetCurrentProcessId", wt.DWORD, [])
GetExitCodeProcess = _proto("GetExitCodeProcess", wt.BOOL, [wt.HANDLE, ctypes.POINTER(wt.DWORD)], check_bool)
IsWow64Process = _proto("IsWow64Process", wt.BOOL, [wt.HANDLE, ctypes.POINTER(wt.BOOL)], check_bool)
GetProcessTimes = _proto(
    "GetProcessTimes",
    wt.BOOL,
    [wt.HANDLE, ctypes.POINTER(FILETIME), ctypes.POINTER(FILETIME), ctypes.POINTER(FILETIME), ctypes.POINTER(FILETIME)],
    check_bool,
)
GetVolumePathNameW = _proto("GetVolumePathNameW", wt.BOOL, [wt.LPCWSTR, wt.LPWSTR, wt.DWORD], check_bool)
# The path of an open file (stdout redirected to one), so its volume can be asked for free space.
GetFinalPathNameByHandleW = _proto(
    "GetFinalPathNameByHandleW", wt.DWORD, [wt.HANDLE, wt.LPWSTR, wt.DWORD, wt.DWORD], check_nonzero
)
# Returns a DRIVE_* code, never fails (DRIVE_UNKNOWN / DRIVE_NO_ROOT_DIR are answers).
GetDriveTypeW = _proto("GetDriveTypeW", wt.UINT, [wt.LPCWSTR])
GetVolumeInformationW = _proto(
    "GetVolumeInformationW",
    wt.BOOL,
    [wt.LPCWSTR, wt.LPWSTR, wt.DWORD, ctypes.POINTER(wt.DWORD), ctypes.POINTER(wt.DWORD), ctypes.POINTER(wt.DWORD),
     wt.LPWSTR, wt.DWORD],
    check_bool,
)
GetSystemDirectoryW = _proto("GetSystemDirectoryW", wt.UINT, [wt.LPWSTR, wt.UINT], check_nonzero)
CreateFileW = _proto(
    "CreateFileW",
    wt.HANDLE,
    [wt.LPCWSTR, wt.DWORD, wt.DWORD, LPSECURITY_ATTRIBUTES, wt.DWORD, wt.DWORD, wt.HANDLE],
    check_handle,
)
# FreeBytesAvailableToCaller (the second argument) is what this user may still write (NTFS quotas
# included); TotalNumberOfFreeBytes ignores quotas. psutil and shutil report the latter.
GetDiskFreeSpaceExW = _proto(
    "GetDiskFreeSpaceExW", wt.BOOL,
    [wt.LPCWSTR, ctypes.POINTER(wt.ULARGE_INTEGER), ctypes.POINTER(wt.ULARGE_INTEGER),
     ctypes.POINTER(wt.ULARGE_INTEGER)],
    check_bool,
)
GetFileInformationByHandle = _proto(
    "GetFileInformationByHandle", wt.BOOL, [wt.HANDLE, ctypes.POINTER(BY_HANDLE_FILE_INFORMATION)], check_bool
)
# FILE_TYPE_UNKNOWN (0) is also an answer (a handle of no known type): the caller reads it, no errcheck.
GetFileType = _proto("GetFileType", wt.DWORD, [wt.HANDLE])
FlushFileBuffers = _proto("FlushFileBuffers", wt.BOOL, [wt.HANDLE], check_bool)
GetFileSizeEx = _proto("GetFileSizeEx", wt.BOOL, [wt.HANDLE, ctypes.POINTER(wt.LARGE_INTEGER)], check_bool)
SetFilePointerEx = _proto(
    "SetFilePointerEx", wt.BOOL, [wt.HANDLE, wt.LARGE_INTEGER, ctypes.POINTER(wt.LARGE_INTEGER), wt.DWORD], check_bool
)
SetEndOfFile = _proto("SetEndOfFile", wt.BOOL, [wt.HANDLE], check_bool)
CreateToolhelp32Snapshot = _proto("CreateToolhelp32Snapshot", wt.HANDLE, [wt.DWORD, wt.DWORD], check_handle)
# Process32FirstW/NextW return FALSE with ERROR_NO_MORE_FILES at the end: the wrapper decides.
Process32FirstW = _proto("Process32FirstW", wt.BOOL, [wt.HANDLE, ctypes.POINTER(PROCESSENTRY32W)])
Process32NextW = _proto("Process32NextW", wt.BOOL, [wt.HANDLE, ctypes.POINTER(PROCESSENTRY32W)])
LocalFree = _proto("LocalFree", wt.HLOCAL, [wt.HLOCAL])

MEM_COMMIT = 0x1000
MEM_PRIVATE = 0x20000
MEM_IMAGE = 0x1000000
PAGE_NOACCESS = 0x01
PAGE_GUARD = 0x100
PAGE_WRITABLE = 0x04 | 0x08 | 0x40 | 0x80  # READWRITE, WRITECOPY, EXECUTE_READWRITE, EXECUTE_WRITECOPY

# Returns 0 past the highest address (ERROR_INVALID_PARAMETER): the walk's natural end, so no errcheck.
VirtualQueryEx = _proto(
    "VirtualQueryEx", ctypes.c_size_t, [wt.HANDLE, ctypes.c_void_p, ctypes.POINTER(MEMORY_BASIC_INFORMATION), ctypes.c_size_t]
)

# IsWow64Process2 exists from Windows 10 1511 on; older systems (and some Wine versions) lack it.
try:
    IsWow64Process2 = _proto(
        "IsWow64Process2", wt.BOOL, [wt.HANDLE, ctypes.POINTER(wt.USHORT), ctypes.POINTER(wt.USHORT)], check_bool
    )
except AttributeError:
    IsWow64Process2 = None

GlobalMemoryStatusEx = _proto("GlobalMemoryStatusEx", wt.BOOL, [ctypes.POINTER(MEMORYSTATUSEX)], check_bool)
# psapi's GetProcessMemoryInfo, exported by kernel32 itself since Windows 7 (and by Wine).
K32GetProcessMemoryInfo = _proto(
    "K32GetProcessMemoryInfo", wt.BOOL, [wt.HANDLE, ctypes.POINTER(PROCESS_MEMORY_COUNTERS_EX), wt.DWORD], check_bool
)

# Process snapshots exist from Windows 8.1 / Server 2012 R2 on; Wine does not export them. Each is
# None where missing, so importing dumplib and every dump without a snapshot work there. They
# return a Win32 error code themselves (ERROR_SUCCESS), not a BOOL. HPSS is a HANDLE.
try:
    PssCaptureSnapshot = _proto(
        "PssCaptureSnapshot", wt.DWORD, [wt.HANDLE, wt.DWORD, wt.DWORD, ctypes.POINTER(wt.HANDLE)], check_status
    )
    PssQuerySnapshot = _proto("PssQuerySnapshot", wt.DWORD, [wt.HANDLE, ctypes.c_int, ctypes.c_void_p, wt.DWORD],
                              check_status)
    PssFreeSnapshot = _proto("PssFreeSnapshot", wt.DWORD, [wt.HANDLE, wt.HANDLE], check_status)
except AttributeError:
    PssCaptureSnapshot = PssQuerySnapshot = PssFreeSnapshot = None

# Console control events: a closed console window, a logoff or a shutdown give a console process a
# few seconds before Windows ends it; the handler runs on a thread Windows creates for it.
CTRL_C_EVENT = 0
CTRL_BREAK_EVENT = 1
CTRL_CLOSE_EVENT = 2
CTRL_LOGOFF_EVENT = 5
CTRL_SHUTDOWN_EVENT = 6
PHANDLER_ROUTINE = ctypes.WINFUNCTYPE(wt.BOOL, wt.DWORD)
SetConsoleCtrlHandler = _proto("SetConsoleCtrlHandler", wt.BOOL, [PHANDLER_ROUTINE, wt.BOOL], check_bool)
ProcessIdToSessionId = _proto("ProcessIdToSessionId", wt.BOOL, [wt.DWORD, ctypes.POINTER(wt.DWORD)], check_bool)
