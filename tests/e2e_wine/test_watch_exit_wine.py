"""ProcessExit under Wine against a real Windows python.exe that exits with code 3.

Wine releases a process's memory before it reports EXIT_PROCESS_DEBUG_EVENT (seen: ReadProcessMemory
through the debugger's own handle fails there, while it reads at the EXIT_THREAD events just
before), so no dump can be taken: the watcher says so in a `failed` event, writes nothing, and the
parent still sees exit code 3. The dump itself is checked on real Windows, where the address space
lives until the debugger continues the event (tests/unit/test_windows_watch.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_watch_wine import Lines, _events
from winhelpers import windows_path
from winrig import Rig

pytestmark = pytest.mark.wine

EXITER = r"""
import ctypes, json, os, sys, threading, time
threading.Thread(target=time.sleep, args=(1000,), daemon=True).start()
print(json.dumps({"pid": os.getpid()}), flush=True)
sys.stdin.readline()
ctypes.windll.kernel32.ExitProcess(3)
"""


def test_on_exit_reports_the_exit_and_why_nothing_was_dumped_and_the_parent_sees_code_3(rig: Rig, outdir: Path,
                                                                                        tmp_path: Path) -> None:
    script = tmp_path / "exiter.py"
    script.write_text(EXITER)
    target = rig.popen_python([windows_path(script)])
    watcher = None
    try:
        pid = json.loads(Lines(target).get(120))["pid"]
        watcher = rig.popen_python(["-m", "dumplib_cli", "watch", str(pid), windows_path(outdir), "--on-exit",
                                    "--timeout", "120", "--json"])
        events_from = Lines(watcher)
        _events(events_from, "watching")
        assert target.stdin is not None
        target.stdin.write("go\n")
        target.stdin.flush()
        events = _events(events_from, "done")
        assert watcher.wait(60) == 0
        assert target.wait(60) == 3  # the parent (this test) sees the code ExitProcess was given
    finally:
        for proc in (target, watcher):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    fired = [e for e in events if e["event"] == "fired"]
    assert len(fired) == 1 and fired[0]["value"] == 3 and "exit code 3" in str(fired[0]["message"])
    failed = [e for e in events if e["event"] == "failed"]
    assert len(failed) == 1 and "memory was already released" in str(failed[0]["message"]), events
    assert not [e for e in events if e["event"] == "dumped"]
    assert list(outdir.iterdir()) == []
