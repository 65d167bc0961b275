"""dumplib.watch on Windows (its exit dump, its CPU figures), checked inside a Windows python.exe.

Runs on real Windows (.github/workflows/windows.yml). Under Wine it skips as "real Windows only":
Wine releases the memory before it reports EXIT_PROCESS_DEBUG_EVENT, which
tests/e2e_wine/test_watch_exit_wine.py checks from the other side (the watcher says so; no dump).
"""
import ctypes
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

if sys.platform != "win32":
    pytest.skip("Windows backend: run inside Windows python.exe (real Windows, or Wine via the Wine tests)",
                allow_module_level=True)

import dumplib  # noqa: E402
from dumplib._windows.ntdll import UNDER_WINE  # noqa: E402
from dumplib.formats.minidump import read_minidump  # noqa: E402

EXITER = textwrap.dedent("""
    import ctypes, json, os, sys, threading, time
    marker = "EXIT-MARKER-%d" % os.getpid()
    threading.Thread(target=time.sleep, args=(1000,), daemon=True).start()
    print(json.dumps({"pid": os.getpid()}), flush=True)
    sys.stdin.readline()
    ctypes.windll.kernel32.ExitProcess(3)
""")


def test_a_process_exit_is_dumped_at_exit_process_and_the_parent_still_sees_its_code(tmp_path):
    if UNDER_WINE:
        pytest.skip("real Windows only: Wine releases the address space before EXIT_PROCESS_DEBUG_EVENT")
    script = tmp_path / "exiter.py"
    script.write_text(EXITER)
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pid = json.loads(proc.stdout.readline())["pid"]
        events = []
        threading.Timer(1.0, lambda: (proc.stdin.write("go\n"), proc.stdin.flush())).start()
        results = dumplib.watch(pid, dumplib.ProcessExit(), path=tmp_path / "exit_EXCEPTIONCODE.dmp", kind="full",
                                timeout=60, on_event=events.append)
        assert proc.wait(30) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(results) == 1, [e.to_dict() for e in events]
    assert results[0].path.endswith("exit_EXIT3.dmp")
    dump = read_minidump(results[0].path)
    assert dump.pid == pid and dump.modules
    with open(results[0].path, "rb") as f:
        assert f"EXIT-MARKER-{pid}".encode() in f.read()  # the memory as it was at the exit


def test_the_process_table_head_has_ntdlls_offsets_for_this_bitness():
    from dumplib._windows import debugapi as dbg

    spi = dbg.SYSTEM_PROCESS_INFORMATION
    wide = ctypes.sizeof(ctypes.c_void_p) == 8
    assert (spi.UserTime.offset, spi.KernelTime.offset) == (0x28, 0x30)
    assert spi.UniqueProcessId.offset == (0x50 if wide else 0x44)


def test_cpu_seconds_from_the_process_table_advance_while_this_process_burns():
    """What the CPU triggers read on Windows: it must move under Wine too, where GetProcessTimes does not."""
    from dumplib._windows.debugloop import WindowsEvents

    support = WindowsEvents()
    before = support.cpu_seconds(os.getpid())
    began, cpu = time.monotonic(), time.thread_time()
    while time.monotonic() - began < 1.0:
        pass
    burned = time.thread_time() - cpu
    time.sleep(0.1)  # past the table's freshness window
    after = support.cpu_seconds(os.getpid())
    assert before is not None and after is not None
    assert after - before >= 0.5 * burned > 0, (before, after, burned)
    assert support.cpu_seconds(0xFFFFFFF0) is None


FAULTER = textwrap.dedent("""
    import ctypes, json, os, sys
    print(json.dumps({"pid": os.getpid()}), flush=True)
    sys.stdin.readline()
    try:
        ctypes.string_at(8, 1)
    except OSError:
        print("handled", flush=True)
    sys.stdin.readline()
""")


def _exception_stream(path):
    """(ExceptionAddress, the CONTEXT's bytes) from the file itself (winnt.h / minidumpapiset.h layouts)."""
    import struct

    data = open(path, "rb").read()
    count, directory = struct.unpack_from("<II", data, 8)
    for i in range(count):
        kind, size, rva = struct.unpack_from("<III", data, directory + 12 * i)
        if kind == 6:  # ExceptionStream: ThreadId, pad, MINIDUMP_EXCEPTION (152 bytes), CONTEXT location
            address = struct.unpack_from("<Q", data, rva + 8 + 16)[0]
            ctx_size, ctx_rva = struct.unpack_from("<II", data, rva + 8 + 152)
            return address, data[ctx_rva:ctx_rva + ctx_size]
    raise AssertionError("no exception stream")


def test_the_exception_streams_context_is_the_faulting_threads_on_this_machine(tmp_path):
    """On the x86 leg too: the CONTEXT is laid out for the dumper's machine, so its instruction
    pointer is the exception's address (an x64 CONTEXT in a 32-bit dump read as empty)."""
    from dumplib._windows.debugloop import DUMPER_MACHINE
    from dumplib._windows.policy import CONTEXT_LAYOUTS

    layout = CONTEXT_LAYOUTS[DUMPER_MACHINE]
    script = tmp_path / "faulter.py"
    script.write_text(FAULTER)
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pid = json.loads(proc.stdout.readline())["pid"]
        threading.Timer(2.0, lambda: (proc.stdin.write("go\n"), proc.stdin.flush())).start()
        results = dumplib.watch(pid, dumplib.ExceptionRaised([0xC0000005]), path=tmp_path / "ex.dmp", kind="mini",
                                timeout=60)
        assert proc.stdout.readline().strip() == "handled"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(results) == 1
    address, context = _exception_stream(results[0].path)
    assert len(context) >= layout.size
    ip = int.from_bytes(context[layout.ip_offset:layout.ip_offset + layout.ip_size], "little")
    assert address and ip == address, (hex(address), hex(ip))
