"""Windows python.exe under Wine at a pids limit: every thread the Windows backend starts, refused for real.

Wine runs each Windows thread as a Linux thread, so a cgroup v1 pids limit on the python.exe process makes
CreateThread fail as short memory or a job's limit would on Windows: Python's "can't start new thread".
Each part must then fail typed (DumpFailed, reason no-resources, saying what could not start and what to
do), leave nothing behind, and leave the target undebugged; a watch's refused hand-over loses that dump
only, never the target's exception (its own handler still runs) nor the watch.

Not reached here: the postmortem handler's watchdog (aedebug.py), which runs only as the system's
AeDebug debugger of a crashed process; its refusal is a failure logged like any other, by reading.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from linuxrig import at_pids_limit, pids_cgroup_v1
from winrig import Rig, windows_path

from test_watch_wine import Lines, _ask, _events, ended, started_faulter

pytestmark = pytest.mark.wine

PARTS = r"""
import ctypes, json, os, sys
import dumplib
from dumplib._egress.pool import DaemonPool
from dumplib._hashing import FollowingHasher

pid, scratch = int(sys.argv[1]), sys.argv[2]
k32 = ctypes.WinDLL("kernel32", use_last_error=True)
k32.OpenProcess.restype = ctypes.c_void_p
k32.OpenProcess.argtypes = [ctypes.c_ulong, ctypes.c_int, ctypes.c_ulong]
k32.CheckRemoteDebuggerPresent.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
k32.CloseHandle.argtypes = [ctypes.c_void_p]
print("ready", flush=True)
sys.stdin.readline()


def debugged():
    handle = k32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    flag = ctypes.c_int(0)
    try:
        assert k32.CheckRemoteDebuggerPresent(handle, ctypes.byref(flag)), ctypes.get_last_error()
    finally:
        k32.CloseHandle(handle)
    return bool(flag.value)


def exception_watch():  # the debugger thread (debugloop.DebugLoop.start)
    dumplib.watch(pid, dumplib.ExceptionRaised([0xC0000005]), path=scratch, timeout=5.0)


def launched():  # the debugger thread that starts a command (DebugLoop.launching)
    dumplib.watch(launch=[sys.executable, "-c", "pass"], triggers=dumplib.ExceptionRaised([0xC0000005]),
                  path=scratch, timeout=5.0)


def monitored_write():  # the thread that watches MiniDumpWriteDump's file (writer.WriteMonitor)
    dumplib.create_dump(pid, os.path.join(scratch, "w.dmp"), "mini", progress=lambda *a: None, sidecar=False)


out = {}
for name, part in [("exception watch", exception_watch), ("launch", launched), ("write monitor", monitored_write),
                   ("hasher", lambda: FollowingHasher(os.path.join(scratch, "h"))),
                   ("upload threads", lambda: DaemonPool(2, "up", lambda: None))]:
    try:
        out[name] = ["started", repr(part())]
    except dumplib.DumpFailed as e:
        out[name] = [e.reason, e.message]
    except BaseException as e:
        out[name] = ["raised", repr(e)]
    out[name].append("debugged" if debugged() else "not debugged")
out["left"] = sorted(os.listdir(scratch))
print(json.dumps(out), flush=True)
"""


def _the_limit_binds_python_exe(proc: "subprocess.Popen[str]") -> None:
    # The Popen's pid is python.exe's own Linux process (wine execs its loader): the limit binds it.
    exe = Path(f"/proc/{proc.pid}/exe").resolve().name
    assert "wine" in exe, exe


def test_each_thread_the_windows_backend_starts_is_refused_typed_and_leaves_nothing(rig: Rig, tmp_path: Path) -> None:
    scratch = tmp_path / "out"
    scratch.mkdir()
    with rig.target() as target:
        script = tmp_path / "parts.py"
        script.write_text(PARTS)
        got = at_pids_limit(rig.popen_python([windows_path(script), str(target.pid), windows_path(scratch)]), room=0,
                            timeout=300, on_ready=_the_limit_binds_python_exe)
        assert got.pop("left") == [], "a temporary or a dump was left behind"
        assert set(got) == {"exception watch", "launch", "write monitor", "hasher", "upload threads"}, got
        for name, (reason, message, debugger) in got.items():
            assert reason == "no-resources", (name, reason, message)
            assert message.startswith("could not start ") and "commit limit" in message, (name, message)
            assert debugger == "not debugged", (name, got[name])
        target.send("ping")  # it runs on, resumed
        assert target.proc.stdout.readline().strip() == "pong"


def test_a_hand_over_the_limit_refuses_loses_that_dump_not_the_exception_nor_the_watch(rig: Rig, outdir: Path,
                                                                                       tmp_path: Path) -> None:
    """`watch --exception AccessViolation --first-chance` whose python.exe is, for a moment, at
    its pids limit when the exception comes: the debugger thread cannot start the thread that writes the
    dump. That firing fails (no-resources), the exception is passed on to the target's own handler, and
    the watch goes on: the next exception, the limit lifted, is dumped (its count of one met, it ends 0)."""
    with started_faulter(rig, tmp_path, ready=180) as (target, target_lines, pid):
        watcher = rig.popen_python(["-m", "dumplib_cli", "watch", str(pid), "-o", windows_path(outdir), "--exception",
                                    "AccessViolation", "--first-chance", "--interval", "0",  # the refused one's interval
                                    "--timeout", "300", "--json"])
        try:
            events_from = Lines(watcher)
            _events(events_from, "watching")
            with pids_cgroup_v1(watcher.pid, room=50) as group:
                (group / "pids.max").write_text((group / "pids.current").read_text().strip())  # no room now
                assert _ask(target, target_lines, "fault")["handled"] is True  # passed on to the target's own handler
                failed = _events(events_from, "failed")[-1]
                assert failed["error"]["reason"] == "no-resources", failed
                assert list(outdir.iterdir()) == [], "the refused firing left a file"
                (group / "pids.max").write_text("max")
                assert _ask(target, target_lines, "fault")["handled"] is True
                dumped = _events(events_from, "dumped")[-1]
                assert watcher.wait(120) == 0, watcher.stderr.read() if watcher.stderr else ""
            assert [p.name for p in outdir.iterdir() if not p.name.endswith(".json")] == \
                [dumped["result"]["path"].rsplit("\\", 1)[-1]]  # the one dump, nothing of the refused one
            assert _ask(target, target_lines, "debugged") == {"debugged": False}  # the watch detached at its count
        finally:
            ended(watcher)
