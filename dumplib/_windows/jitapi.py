"""kernel32.dll prototypes the AeDebug handler needs: the event it signals, the crashed process's memory."""
from __future__ import annotations

import sys

if sys.platform != "win32":  # survives python -O, unlike the assert below
    raise ImportError(f"{__name__} is Windows only")
assert sys.platform == "win32"  # tells type checkers on other platforms to skip this module

import ctypes
from ctypes import wintypes as wt
from functools import partial

from ._common import check_bool, prototype

_dll = ctypes.WinDLL("kernel32", use_last_error=True)
_proto = partial(prototype, _dll)

PROCESS_VM_READ = 0x0010
PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
THREAD_QUERY_LIMITED_INFORMATION = 0x0800
#: sizeof(EXCEPTION_RECORD) on x64, and of CONTEXT (AMD64).
EXCEPTION_RECORD_SIZE = 152
CONTEXT_SIZE = 1232


class JIT_DEBUG_INFO(ctypes.Structure):  # noqa: N801 - the Windows name
    _fields_ = [("dwSize", wt.DWORD), ("dwProcessorArchitecture", wt.DWORD), ("dwThreadID", wt.DWORD),
                ("dwReserved0", wt.DWORD), ("lpExceptionAddress", ctypes.c_uint64),
                ("lpExceptionRecord", ctypes.c_uint64), ("lpContextRecord", ctypes.c_uint64)]


SetEvent = _proto("SetEvent", wt.BOOL, [wt.HANDLE], check_bool)
ReadProcessMemory = _proto("ReadProcessMemory", wt.BOOL,
                           [wt.HANDLE, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                            ctypes.POINTER(ctypes.c_size_t)], check_bool)
# 0 (with the error in GetLastError) when the thread cannot be asked: the caller reads the result.
GetProcessIdOfThread = _proto("GetProcessIdOfThread", wt.DWORD, [wt.HANDLE])
