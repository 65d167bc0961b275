"""dumplib.watch's exit dump on Windows, checked inside a Windows python.exe against a real process.

Runs on real Windows (.github/workflows/windows.yml). Under Wine it skips as "real Windows only":
Wine releases the memory before it reports EXIT_PROCESS_DEBUG_EVENT, which
tests/e2e_wine/test_watch_exit_wine.py checks from the other side (the watcher says so; no dump).
"""
import json
import subprocess
import sys
import textwrap
import threading

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
