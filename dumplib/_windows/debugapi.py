"""kernel32.dll's debugging API (the debug loop of `dumplib.watch`): prototypes and structures only.

Kept apart from kernel32.py so the debug loop's declarations sit in one place of their own.
"""
from __future__ import annotations

import sys

if sys.platform != "win32":  # survives python -O, unlike the assert below
    raise ImportError(f"{__name__} is Windows only")
assert sys.platform == "win32"  # tells type checkers on other platforms to skip this module

import ctypes
from ctypes import wintypes as wt
from functools import partial

from ._common import check_bool, check_handle, prototype

_dll = ctypes.WinDLL("kernel32", use_last_error=True)
_proto = partial(prototype, _dll)

EXCEPTION_DEBUG_EVENT = 1
CREATE_THREAD_DEBUG_EVENT = 2
CREATE_PROCESS_DEBUG_EVENT = 3
EXIT_THREAD_DEBUG_EVENT = 4
EXIT_PROCESS_DEBUG_EVENT = 5
LOAD_DLL_DEBUG_EVENT = 6
UNLOAD_DLL_DEBUG_EVENT = 7
OUTPUT_DEBUG_STRING_EVENT = 8
RIP_EVENT = 9

DBG_CONTINUE = 0x00010002
DBG_EXCEPTION_NOT_HANDLED = 0x80010001

EXCEPTION_BREAKPOINT = 0x80000003
STATUS_WX86_BREAKPOINT = 0x4000001F
EXCEPTION_MAXIMUM_PARAMETERS = 15


class EXCEPTION_RECORD(ctypes.Structure):
    pass


EXCEPTION_RECORD._fields_ = [
    ("ExceptionCode", wt.DWORD),
    ("ExceptionFlags", wt.DWORD),
    ("ExceptionRecord", ctypes.POINTER(EXCEPTION_RECORD)),
    ("ExceptionAddress", ctypes.c_void_p),
    ("NumberParameters", wt.DWORD),
    ("ExceptionInformation", ctypes.c_size_t * EXCEPTION_MAXIMUM_PARAMETERS),
]


class EXCEPTION_DEBUG_INFO(ctypes.Structure):
    _fields_ = [("ExceptionRecord", EXCEPTION_RECORD), ("dwFirstChance", wt.DWORD)]


class CREATE_PROCESS_DEBUG_INFO(ctypes.Structure):
    _fields_ = [
        ("hFile", wt.HANDLE),
        ("hProcess", wt.HANDLE),
        ("hThread", wt.HANDLE),
        ("lpBaseOfImage", ctypes.c_void_p),
        ("dwDebugInfoFileOffset", wt.DWORD),
        ("nDebugInfoSize", wt.DWORD),
        ("lpThreadLocalBase", ctypes.c_void_p),
        ("lpStartAddress", ctypes.c_void_p),
        ("lpImageName", ctypes.c_void_p),
        ("fUnicode", wt.WORD),
    ]


class LOAD_DLL_DEBUG_INFO(ctypes.Structure):
    _fields_ = [
        ("hFile", wt.HANDLE),
        ("lpBaseOfDll", ctypes.c_void_p),
        ("dwDebugInfoFileOffset", wt.DWORD),
        ("nDebugInfoSize", wt.DWORD),
        ("lpImageName", ctypes.c_void_p),
        ("fUnicode", wt.WORD),
    ]


class EXIT_PROCESS_DEBUG_INFO(ctypes.Structure):
    _fields_ = [("dwExitCode", wt.DWORD)]


class _DEBUG_EVENT_UNION(ctypes.Union):
    _fields_ = [
        ("Exception", EXCEPTION_DEBUG_INFO),
        ("CreateProcessInfo", CREATE_PROCESS_DEBUG_INFO),
        ("LoadDll", LOAD_DLL_DEBUG_INFO),
        ("ExitProcess", EXIT_PROCESS_DEBUG_INFO),
        ("_size", ctypes.c_byte * 160),
    ]


class DEBUG_EVENT(ctypes.Structure):
    _fields_ = [
        ("dwDebugEventCode", wt.DWORD),
        ("dwProcessId", wt.DWORD),
        ("dwThreadId", wt.DWORD),
        ("u", _DEBUG_EVENT_UNION),
    ]


DebugActiveProcess = _proto("DebugActiveProcess", wt.BOOL, [wt.DWORD], check_bool)
DebugActiveProcessStop = _proto("DebugActiveProcessStop", wt.BOOL, [wt.DWORD], check_bool)
DebugSetProcessKillOnExit = _proto("DebugSetProcessKillOnExit", wt.BOOL, [wt.BOOL], check_bool)
# FALSE with ERROR_SEM_TIMEOUT is the normal "nothing happened": the caller reads GetLastError.
WaitForDebugEvent = _proto("WaitForDebugEvent", wt.BOOL, [ctypes.POINTER(DEBUG_EVENT), wt.DWORD])
ContinueDebugEvent = _proto("ContinueDebugEvent", wt.BOOL, [wt.DWORD, wt.DWORD, wt.DWORD], check_bool)
CloseHandle = _proto("CloseHandle", wt.BOOL, [wt.HANDLE], check_bool)
# FALSE is an answer here (the memory is gone), not an error: the caller reads the result.
ReadProcessMemory = _proto("ReadProcessMemory", wt.BOOL,
                           [wt.HANDLE, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)])

THREAD_GET_CONTEXT = 0x0008
THREAD_QUERY_INFORMATION = 0x0040
class EXCEPTION_POINTERS(ctypes.Structure):
    _fields_ = [("ExceptionRecord", ctypes.POINTER(EXCEPTION_RECORD)), ("ContextRecord", ctypes.c_void_p)]


class MINIDUMP_EXCEPTION_INFORMATION(ctypes.Structure):
    _pack_ = 4  # dbghelp.h declares it inside pshpack4.h
    _fields_ = [
        ("ThreadId", wt.DWORD),
        ("ExceptionPointers", ctypes.POINTER(EXCEPTION_POINTERS)),
        ("ClientPointers", wt.BOOL),
    ]


OpenThread = _proto("OpenThread", wt.HANDLE, [wt.DWORD, wt.BOOL, wt.DWORD], check_handle)
GetThreadContext = _proto("GetThreadContext", wt.BOOL, [wt.HANDLE, ctypes.c_void_p], check_bool)


# -- CPU time of every process at once, for the watcher's CPU triggers -------------------------------
# GetProcessTimes never advances under Wine; these times do, and on Windows they are the same
# figures (the process's own user and kernel time, exited threads included).
SystemProcessInformation = 5
STATUS_INFO_LENGTH_MISMATCH = 0xC0000004


class UNICODE_STRING(ctypes.Structure):
    _fields_ = [("Length", wt.USHORT), ("MaximumLength", wt.USHORT), ("Buffer", ctypes.c_void_p)]


class SYSTEM_PROCESS_INFORMATION(ctypes.Structure):
    """The head of each entry NtQuerySystemInformation(SystemProcessInformation) returns (the
    fields winternl.h calls Reserved1, as ntdll lays them out); threads and the rest follow."""

    _fields_ = [
        ("NextEntryOffset", wt.ULONG),
        ("NumberOfThreads", wt.ULONG),
        ("WorkingSetPrivateSize", ctypes.c_int64),
        ("HardFaultCount", wt.ULONG),
        ("NumberOfThreadsHighWatermark", wt.ULONG),
        ("CycleTime", ctypes.c_uint64),
        ("CreateTime", ctypes.c_int64),
        ("UserTime", ctypes.c_int64),  # 100-ns units
        ("KernelTime", ctypes.c_int64),
        ("ImageName", UNICODE_STRING),
        ("BasePriority", ctypes.c_long),
        ("UniqueProcessId", ctypes.c_void_p),
    ]


_ntdll = ctypes.WinDLL("ntdll")
# Returns an NTSTATUS, read by the caller (a buffer too small is an answer, not an error).
NtQuerySystemInformation = _ntdll.NtQuerySystemInformation
NtQuerySystemInformation.restype = ctypes.c_long
NtQuerySystemInformation.argtypes = [wt.ULONG, ctypes.c_void_p, wt.ULONG, ctypes.POINTER(wt.ULONG)]
