"""Runs inside Windows python.exe (see wine_bare_vs_dumplib.py): bare MiniDumpWriteDump vs create_dump.

Prints one JSON line per run: {"who", "kind", "seconds", "bytes"}. Runs are interleaved so that
both contenders see the same machine state.
"""
import ctypes
import json
import os
import sys
import time
from ctypes import wintypes as wt

import dumplib
from dumplib.kinds import DumpKind
from dumplib._windows.masks import windows_mask

pid, outdir, runs = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
kinds = sys.argv[4].split(",")

# The peer: the smallest correct ctypes program a user would write (its own declarations).
k32 = ctypes.WinDLL("kernel32", use_last_error=True)
k32.OpenProcess.restype = wt.HANDLE
k32.OpenProcess.argtypes = [wt.DWORD, wt.BOOL, wt.DWORD]
k32.CreateFileW.restype = wt.HANDLE
k32.CreateFileW.argtypes = [wt.LPCWSTR, wt.DWORD, wt.DWORD, ctypes.c_void_p, wt.DWORD, wt.DWORD, wt.HANDLE]
k32.CloseHandle.argtypes = [wt.HANDLE]
dbghelp = ctypes.WinDLL("dbghelp", use_last_error=True)
dbghelp.MiniDumpWriteDump.restype = wt.BOOL
dbghelp.MiniDumpWriteDump.argtypes = [wt.HANDLE, wt.DWORD, wt.HANDLE, wt.DWORD, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]


def bare(kind, path):
    start = time.perf_counter()
    proc = k32.OpenProcess(0x0400 | 0x0010 | 0x0040, False, pid)
    f = k32.CreateFileW(path, 0xC0000000, 0, None, 1, 0x80, None)
    ok = dbghelp.MiniDumpWriteDump(proc, pid, f, windows_mask(DumpKind(kind)), None, None, None)
    k32.CloseHandle(f)
    k32.CloseHandle(proc)
    assert ok, ctypes.get_last_error()
    return time.perf_counter() - start


def ours(kind, path):
    start = time.perf_counter()
    dumplib.create_dump(pid, path, kind)
    return time.perf_counter() - start


for i in range(runs):
    for kind in kinds:
        for who, fn in (("bare", bare), ("dumplib", ours)) if i % 2 == 0 else (("dumplib", ours), ("bare", bare)):
            path = os.path.join(outdir, f"{who}-{kind}-{i}.dmp")
            seconds = fn(kind, path)
            size = os.path.getsize(path)
            os.remove(path)
            print(json.dumps({"who": who, "kind": kind, "seconds": seconds, "bytes": size}), flush=True)
