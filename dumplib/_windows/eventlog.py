"""advapi32.dll: the event log's reporting prototypes only (the postmortem handler's one line per crash)."""
from __future__ import annotations

import sys

# Windows only (ctypes.WinDLL).
if sys.platform != "win32":  # survives python -O, unlike the assert below
    raise ImportError(f"{__name__} is Windows only")
assert sys.platform == "win32"  # tells type checkers on other platforms to skip this module

import ctypes
from ctypes import wintypes as wt
from functools import partial

from ._common import check_bool, check_handle, prototype

_dll = ctypes.WinDLL("advapi32", use_last_error=True)
_proto = partial(prototype, _dll)

EVENTLOG_ERROR_TYPE = 0x0001
EVENTLOG_WARNING_TYPE = 0x0002
EVENTLOG_INFORMATION_TYPE = 0x0004

RegisterEventSourceW = _proto("RegisterEventSourceW", wt.HANDLE, [wt.LPCWSTR, wt.LPCWSTR], check_handle)
ReportEventW = _proto(
    "ReportEventW",
    wt.BOOL,
    [wt.HANDLE, wt.WORD, wt.WORD, wt.DWORD, ctypes.c_void_p, wt.WORD, wt.DWORD, ctypes.POINTER(wt.LPCWSTR),
     ctypes.c_void_p],
    check_bool,
)
DeregisterEventSource = _proto("DeregisterEventSource", wt.BOOL, [wt.HANDLE], check_bool)
