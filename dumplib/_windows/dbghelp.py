"""dbghelp.dll, loaded from the System32 directory by full path (never via the DLL search path).

Prototypes and the minidump structures (packed to 4 bytes, as dbghelp.h declares them) only.
"""
from __future__ import annotations

import ctypes
import os
from ctypes import wintypes as wt
from functools import partial

from . import kernel32
from ._common import check_bool, prototype


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


class MINIDUMP_USER_STREAM(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("Type", wt.ULONG), ("BufferSize", wt.ULONG), ("Buffer", ctypes.c_void_p)]


class MINIDUMP_USER_STREAM_INFORMATION(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("UserStreamCount", wt.ULONG), ("UserStreamArray", ctypes.POINTER(MINIDUMP_USER_STREAM))]


class MINIDUMP_CALLBACK_INPUT(ctypes.Structure):
    # Only the fixed head is declared: dumplib reads CallbackType and nothing from the union.
    _pack_ = 4
    _fields_ = [("ProcessId", wt.ULONG), ("ProcessHandle", wt.HANDLE), ("CallbackType", wt.ULONG)]


class MINIDUMP_CALLBACK_OUTPUT_CANCEL(ctypes.Structure):
    # The union member a CancelCallback fills: {BOOL CheckCancel; BOOL Cancel}.
    _pack_ = 4
    _fields_ = [("CheckCancel", wt.BOOL), ("Cancel", wt.BOOL)]


MINIDUMP_CALLBACK_ROUTINE = ctypes.WINFUNCTYPE(
    wt.BOOL, ctypes.c_void_p, ctypes.POINTER(MINIDUMP_CALLBACK_INPUT), ctypes.POINTER(MINIDUMP_CALLBACK_OUTPUT_CANCEL)
)


class MINIDUMP_CALLBACK_INFORMATION(ctypes.Structure):
    _pack_ = 4
    _fields_ = [("CallbackRoutine", MINIDUMP_CALLBACK_ROUTINE), ("CallbackParam", ctypes.c_void_p)]


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
