"""dbghelp.dll, loaded from the System32 directory by full path (never via the DLL search path).

Prototypes and the minidump structures (packed to 4 bytes, as dbghelp.h declares them) only.
"""
from __future__ import annotations

import sys

# Windows only (ctypes.WinDLL).
if sys.platform != "win32":  # survives python -O, unlike the assert below
    raise ImportError(f"{__name__} is Windows only")
assert sys.platform == "win32"  # tells type checkers on other platforms to skip this module

import ctypes
import os
from ctypes import wintypes as wt
from functools import partial

from . import kernel32
from ._common import check_bool, prototype
from .structs import NATIVE


def _system32(dll_name: str) -> str:
    buf = ctypes.create_unicode_buffer(kernel32.MAX_PATH)
    kernel32.GetSystemDirectoryW(buf, kernel32.MAX_PATH)
    return os.path.join(buf.value, dll_name)


#: Full path the DLL was loaded from (reported in errors and tests).
DLL_PATH = _system32("dbghelp.dll")
_dll = ctypes.WinDLL(DLL_PATH, use_last_error=True)
_proto = partial(prototype, _dll)

CommentStreamW = 11
CancelCallback = 6


MINIDUMP_USER_STREAM = NATIVE.MINIDUMP_USER_STREAM
MINIDUMP_USER_STREAM_INFORMATION = NATIVE.MINIDUMP_USER_STREAM_INFORMATION
MINIDUMP_CALLBACK_INPUT = NATIVE.MINIDUMP_CALLBACK_INPUT
MINIDUMP_CALLBACK_OUTPUT_CANCEL = NATIVE.MINIDUMP_CALLBACK_OUTPUT_CANCEL
MINIDUMP_CALLBACK_INFORMATION = NATIVE.MINIDUMP_CALLBACK_INFORMATION

MINIDUMP_CALLBACK_ROUTINE = ctypes.WINFUNCTYPE(
    wt.BOOL, ctypes.c_void_p, ctypes.POINTER(MINIDUMP_CALLBACK_INPUT), ctypes.POINTER(MINIDUMP_CALLBACK_OUTPUT_CANCEL)
)


MiniDumpWriteDump = _proto(
    "MiniDumpWriteDump",
    wt.BOOL,
    [
        wt.HANDLE,  # hProcess
        wt.DWORD,  # ProcessId
        wt.HANDLE,  # hFile
        wt.DWORD,  # DumpType (MINIDUMP_TYPE)
        ctypes.c_void_p,  # ExceptionParam (always NULL: live dumps)
        ctypes.POINTER(MINIDUMP_USER_STREAM_INFORMATION),
        ctypes.POINTER(MINIDUMP_CALLBACK_INFORMATION),
    ],
    check_bool,
)
