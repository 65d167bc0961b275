"""Turning Win32 error codes and HRESULTs into typed, readable errors."""
from __future__ import annotations

import sys

# Windows only (ctypes.WinDLL).
if sys.platform != "win32":  # survives python -O, unlike the assert below
    raise ImportError(f"{__name__} is Windows only")
assert sys.platform == "win32"  # tells type checkers on other platforms to skip this module

import ctypes
from typing import Any, Optional, Tuple

from ..errors import DumpFailed

ERROR_SUCCESS = 0
ERROR_FILE_NOT_FOUND = 2
ERROR_ACCESS_DENIED = 5
ERROR_INVALID_HANDLE = 6
ERROR_NO_MORE_FILES = 18
ERROR_HANDLE_DISK_FULL = 39
ERROR_FILE_EXISTS = 80
ERROR_INVALID_PARAMETER = 87
ERROR_DISK_FULL = 112
ERROR_ALREADY_EXISTS = 183
ERROR_PARTIAL_COPY = 299
ERROR_CANCELLED = 1223
ERROR_DISK_QUOTA_EXCEEDED = 1295
ERROR_NOT_ALL_ASSIGNED = 1300
ERROR_PRIVILEGE_NOT_HELD = 1314

_NAMES = {
    0: "ERROR_SUCCESS",
    ERROR_FILE_NOT_FOUND: "ERROR_FILE_NOT_FOUND",
    ERROR_ACCESS_DENIED: "ERROR_ACCESS_DENIED",
    ERROR_INVALID_HANDLE: "ERROR_INVALID_HANDLE",
    ERROR_NO_MORE_FILES: "ERROR_NO_MORE_FILES",
    ERROR_HANDLE_DISK_FULL: "ERROR_HANDLE_DISK_FULL",
    ERROR_FILE_EXISTS: "ERROR_FILE_EXISTS",
    ERROR_INVALID_PARAMETER: "ERROR_INVALID_PARAMETER",
    ERROR_DISK_FULL: "ERROR_DISK_FULL",
    ERROR_ALREADY_EXISTS: "ERROR_ALREADY_EXISTS",
    ERROR_PARTIAL_COPY: "ERROR_PARTIAL_COPY",
    ERROR_CANCELLED: "ERROR_CANCELLED",
    ERROR_DISK_QUOTA_EXCEEDED: "ERROR_DISK_QUOTA_EXCEEDED",
    ERROR_NOT_ALL_ASSIGNED: "ERROR_NOT_ALL_ASSIGNED",
    ERROR_PRIVILEGE_NOT_HELD: "ERROR_PRIVILEGE_NOT_HELD",
}


#: Every way Windows says "no room for this user": a full volume, or their NTFS quota used up.
DISK_FULL_ERRORS = frozenset({ERROR_HANDLE_DISK_FULL, ERROR_DISK_FULL, ERROR_DISK_QUOTA_EXCEEDED})


def split_hresult(code: int) -> Tuple[int, Optional[int]]:
    """(Win32 error, HRESULT or None): MiniDumpWriteDump reports HRESULT_FROM_WIN32 values."""
    code &= 0xFFFFFFFF
    if code & 0x80000000 and (code >> 16) & 0x1FFF == 7:  # FACILITY_WIN32
        return code & 0xFFFF, code
    if code & 0x80000000:
        return code, code
    return code, None


def describe(code: int) -> str:
    """``ERROR_PARTIAL_COPY (299): Only part of a ReadProcessMemory ...`` or the HRESULT form."""
    win32, hresult = split_hresult(code)
    name = _NAMES.get(win32, "")
    text = ctypes.FormatError(win32).strip() if hasattr(ctypes, "FormatError") else ""
    label = f"{name} ({win32})" if name else f"error {win32}"
    if hresult is not None:
        label = f"HRESULT 0x{hresult:08X}, {label}"
    return f"{label}: {text}" if text else label


class Win32Error(DumpFailed):
    """A Win32 call failed. Raised by the bindings' errcheck; wrappers turn it into the public error."""

    winerror: int
    hresult: Optional[int]
    function: str

    def __init__(self, function: str, code: int) -> None:
        win32, hresult = split_hresult(code)
        super().__init__(f"{function} failed: {describe(code)}", winerror=win32, hresult=hresult, function=function)


def check_bool(result: Any, func: Any, args: Tuple[Any, ...]) -> Any:
    """errcheck for BOOL functions: FALSE means failure, GetLastError says why."""
    if not result:
        raise Win32Error(func.__name__, ctypes.get_last_error())
    return result


def check_handle(result: Any, func: Any, args: Tuple[Any, ...]) -> Any:
    """errcheck for functions returning a HANDLE, where NULL or INVALID_HANDLE_VALUE is failure."""
    if result is None or result == 0 or result == INVALID_HANDLE_VALUE:
        raise Win32Error(func.__name__, ctypes.get_last_error())
    return result


def check_nonzero(result: Any, func: Any, args: Tuple[Any, ...]) -> Any:
    """errcheck for functions returning a count, where 0 is failure."""
    if result == 0:
        raise Win32Error(func.__name__, ctypes.get_last_error())
    return result


def check_status(result: Any, func: Any, args: Tuple[Any, ...]) -> Any:
    """errcheck for functions returning a Win32 error code themselves (ERROR_SUCCESS is success)."""
    if result != ERROR_SUCCESS:
        raise Win32Error(func.__name__, result)
    return result


INVALID_HANDLE_VALUE = (1 << (8 * ctypes.sizeof(ctypes.c_void_p))) - 1


def prototype(dll: Any, name: str, restype: Any, argtypes: Any, errcheck: Any = None) -> Any:
    """Declare *name* from *dll* with its full signature (and errcheck, where failure is detectable)."""
    fn = getattr(dll, name)
    fn.restype = restype
    fn.argtypes = argtypes
    if errcheck is not None:
        fn.errcheck = errcheck
    return fn
