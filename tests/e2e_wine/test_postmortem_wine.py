"""AeDebug and WER LocalDumps under Wine: registry round trips, and a real crash of a Windows python.exe
dumped by dumplib as the AeDebug debugger (Wine starts AeDebug debuggers as Windows does, but hands them
no JIT_DEBUG_INFO: the handler attaches and dumps the second-chance exception, its exception stream
required here); the handler's attach failure, missing second chance and JIT_DEBUG_INFO validation.
The crash under WER itself needs real Windows: tests/unit/test_windows_postmortem.py in the workflow."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from winhelpers import cli, parse_independently, windows_path
from winrig import Rig

pytestmark = pytest.mark.wine

READ = r'''
import json, winreg
out = {}
for view, flag in (("64", winreg.KEY_WOW64_64KEY), ("32", winreg.KEY_WOW64_32KEY)):
    for path in (r"SOFTWARE\Microsoft\Windows NT\CurrentVersion\AeDebug",
                 r"SOFTWARE\Microsoft\Windows\Windows Error Reporting\LocalDumps",
                 r"SOFTWARE\Microsoft\Windows\Windows Error Reporting\LocalDumps\crashy.exe"):
        try:
            k = winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, path, 0, winreg.KEY_READ | flag)
        except OSError:
            out[view + path] = None
            continue
        values, i = {}, 0
        while True:
            try:
                name, data, kind = winreg.EnumValue(k, i)
            except OSError:
                break
            values[name] = [kind, data.hex() if isinstance(data, bytes) else data]
            i += 1
        out[view + path] = values
print(json.dumps(out))
'''


@pytest.fixture
def crash_dir(rig: Rig) -> Iterator[Path]:
    """A dump folder install accepts: in the prefix's %TEMP% (mode 755 up to /root), not under pytest's
    tmp_path, below /tmp, a folder anyone may write to (install refuses it: see the refusal test)."""
    made = rig.windows_temp() / f"crashes-{uuid.uuid4().hex[:12]}"
    made.mkdir(mode=0o755)
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


def registry(rig: Rig) -> Dict[str, Any]:
    done = rig.run_python(["-c", READ])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_aedebug_install_uninstall_round_trip(rig: Rig, tmp_path: Path, crash_dir: Path) -> None:
    before = registry(rig)
    dumps = crash_dir
    done = cli(rig, "postmortem", "install", "--dir", windows_path(dumps), "--json")
    assert done.returncode == 0, done.stderr
    try:
        now = registry(rig)
        for view in ("64", "32"):
            values = now[view + r"SOFTWARE\Microsoft\Windows NT\CurrentVersion\AeDebug"]
            assert "dumplib._windows.aedebug" in values["Debugger"][1] and values["Auto"] == [1, "1"], values
        st = json.loads(cli(rig, "postmortem", "status", "--json").stdout)
        assert st["registered"] == "dumplib" and st["backup"] is not None
    finally:
        undone = cli(rig, "postmortem", "uninstall", "--force")
    assert undone.returncode == 0, undone.stderr
    assert registry(rig) == before


def test_aedebug_install_refuses_a_folder_anyone_may_write_to_and_changes_nothing(rig: Rig, tmp_path: Path) -> None:
    """Wine turns a Unix mode into a DACL: a folder of mode 0777 reads back as Everyone with full control.
    The handler would write there as every crashing user (services' SYSTEM too): refused, the registry
    as it was, and the message says which folder and what to do."""
    before = registry(rig)
    dumps = tmp_path / "open-to-all"
    dumps.mkdir()
    dumps.chmod(0o777)
    done = cli(rig, "postmortem", "install", "--dir", windows_path(dumps), "--json")
    if done.returncode == 0:  # a failing test leaves no handler registered in the shared prefix
        cli(rig, "postmortem", "uninstall", "--force")
    assert done.returncode != 0, done.stdout
    message = json.loads(done.stdout)["error"]["message"]
    assert f"{windows_path(dumps)} can be changed by S-1-1-0 (Everyone)" in message, message
    assert "administrators only" in message and "Nothing changed" in message, message
    assert registry(rig) == before


#: The crasher: a thread started through ctypes at msvcrt's strlen with address 8 (it reads address 8,
#: unguarded: an unhandled access violation), while the main thread keeps raising first-chance access
#: violations at address 16 that ctypes handles (string_at is a foreign call, guarded by SEH). The
#: faulting thread holds no GIL, so the noise goes on (without pause once the AeDebug handler has
#: started): a handler that took a first chance would dump it.
CRASHER = r"""
import ctypes, os, time
from ctypes import wintypes as wt
k32 = ctypes.WinDLL("kernel32", use_last_error=True)
k32.CreateThread.restype = wt.HANDLE
k32.CreateThread.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p, wt.DWORD,
                             ctypes.POINTER(wt.DWORD)]
k32.CreateToolhelp32Snapshot.restype = wt.HANDLE
class PROCESSENTRY32W(ctypes.Structure):
    _fields_ = [("dwSize", wt.DWORD), ("cntUsage", wt.DWORD), ("th32ProcessID", wt.DWORD),
                ("th32DefaultHeapID", ctypes.c_size_t), ("th32ModuleID", wt.DWORD), ("cntThreads", wt.DWORD),
                ("th32ParentProcessID", wt.DWORD), ("pcPriClassBase", ctypes.c_long), ("dwFlags", wt.DWORD),
                ("szExeFile", ctypes.c_wchar * 260)]
def handler_started():
    snap, entry = k32.CreateToolhelp32Snapshot(2, 0), PROCESSENTRY32W()
    entry.dwSize = ctypes.sizeof(entry)
    ok, found = k32.Process32FirstW(wt.HANDLE(snap), ctypes.byref(entry)), False
    while ok and not found:
        found = entry.th32ParentProcessID == os.getpid()
        ok = k32.Process32NextW(wt.HANDLE(snap), ctypes.byref(entry))
    k32.CloseHandle(wt.HANDLE(snap))
    return found
strlen = ctypes.cast(ctypes.cdll.msvcrt.strlen, ctypes.c_void_p)
tid = wt.DWORD()
assert k32.CreateThread(None, 0, strlen, ctypes.c_void_p(8), 0, ctypes.byref(tid))
print(tid.value, flush=True)
while not handler_started():
    time.sleep(0.05)
while True:  # from the handler's start to the end, first chances without pause: one is always in flight
    try:
        ctypes.string_at(16, 1)
    except OSError:
        pass
"""

#: Runs the crasher from a Windows parent, which sees its whole 32-bit exit code (Wine's own exit status keeps 8 bits).
PARENT = r"""
import json, subprocess, sys
p = subprocess.run([sys.executable, "-c", sys.argv[1]], capture_output=True, text=True, timeout=240)
print(json.dumps({"rc": p.returncode & 0xFFFFFFFF, "out": p.stdout, "err": p.stderr[-2000:]}))
"""


def _handlers_running() -> list:
    """Unix processes (Wine's) still running the AeDebug handler."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"dumplib._windows.aedebug" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_aedebug_crash_of_a_real_python_is_dumped_with_its_exception(rig: Rig, tmp_path: Path,
                                                                    crash_dir: Path) -> None:
    """Wine passes no JIT_DEBUG_INFO: the handler attaches as a debugger, signals the event, and dumps
    the second-chance exception; the crashed process then ends with the exception code."""
    dumps = crash_dir
    done = cli(rig, "postmortem", "install", "--dir", windows_path(dumps), "--min-free", "1M", "--json")
    assert done.returncode == 0, done.stderr
    try:
        ran = rig.run_python(["-c", PARENT, CRASHER], timeout=300)
        assert ran.returncode == 0, ran.stderr
        crash = json.loads(ran.stdout.strip().splitlines()[-1])
        deadline = time.monotonic() + 120
        while not (dumps / "postmortem.log").exists() and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        cli(rig, "postmortem", "uninstall", "--force")
    faulting_tid = int(crash["out"].split()[0])
    # The process ended as without a debugger: its exit code is the exception code.
    assert crash["rc"] == 0xC0000005, crash
    log = (dumps / "postmortem.log").read_text()
    [record] = [json.loads(line) for line in log.splitlines()]
    dumps_found = list(dumps.glob("*.dmp"))
    assert len(dumps_found) == 1, log
    assert not [p for p in dumps.iterdir() if p.suffix not in (".dmp", ".json", ".log")], list(dumps.iterdir())
    [dump] = dumps_found
    side = json.loads(Path(str(dump) + ".json").read_text())
    assert record["outcome"] == "written" and side["pid"] == record["pid"], record
    assert side["comment"] == "postmortem: C0000005" and record["exception"] == "C0000005", (side, record)
    # The log line says what was done: no JIT_DEBUG_INFO, attached, the second chance, the exit code.
    assert record["jit"].startswith("none") and record["via"] == "debugger", record
    assert "second chance" in record["did"] and "exit code 0xC0000005" in record["did"], record
    md = parse_independently(dump, tmp_path)
    assert faulting_tid in [t.ThreadId for t in md.threads.threads]
    # The exception stream, read by the independent parser: the crash's code, on the thread that faulted,
    # reading address 8 (not the other thread's handled faults at 16), with that thread's context at the fault.
    assert md.exception is not None, "the dump has no exception stream"
    stream = md.exception.exception_records[0]
    assert stream.ThreadId == faulting_tid
    assert int(stream.ExceptionRecord.ExceptionCode_raw) == 0xC0000005
    assert stream.ExceptionRecord.ExceptionInformation[:2] == [0, 8], stream.ExceptionRecord.ExceptionInformation
    assert stream.ThreadContext.DataSize >= 1232
    with open(dump, "rb") as f:  # x64 CONTEXT: Rip at 0xF8
        f.seek(stream.ThreadContext.Rva + 0xF8)
        assert int.from_bytes(f.read(8), "little") == stream.ExceptionRecord.ExceptionAddress
    # Nothing left: no handler still running (attached or waiting).
    deadline = time.monotonic() + 30
    while _handlers_running() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _handlers_running()


def test_wer_localdumps_enable_disable_round_trip_and_refusals(rig: Rig, tmp_path: Path) -> None:
    before = registry(rig)
    folder = tmp_path / "wer"
    folder.mkdir()
    system = cli(rig, "postmortem", "wer", "enable", "--dir", "C:\\windows\\temp", "--per-dump", "1M")
    if system.returncode == 0:  # a planted bug got through: leave the prefix as it was
        cli(rig, "postmortem", "wer", "disable")
    assert system.returncode == 2 and "system drive" in system.stderr, system.stderr
    huge = cli(rig, "postmortem", "wer", "enable", "--dir", windows_path(folder), "--per-dump", "1000T", "--count", "3")
    if huge.returncode == 0:
        cli(rig, "postmortem", "wer", "disable")
    assert huge.returncode == 2 and "need" in huge.stderr, huge.stderr
    assert registry(rig) == before
    for exe in (None, "crashy.exe"):
        extra = ["--exe", exe] if exe else []
        try:
            done = cli(rig, "postmortem", "wer", "enable", "--dir", windows_path(folder), "--per-dump", "1M",
                       "--count", "4", "--kind", "full", *extra)
            assert done.returncode == 0, done.stderr
            values = json.loads(done.stdout)["values"]
            assert values["DumpCount"] == [4, 4] and values["DumpType"] == [4, 2] and values["DumpFolder"][1] == \
                windows_path(folder), values
        finally:
            undone = cli(rig, "postmortem", "wer", "disable", *extra)
        assert undone.returncode == 0, undone.stderr
    assert registry(rig) == before


#: Starts the handler as Windows would, for a process it cannot attach to (already being debugged: a child
#: started with DEBUG_PROCESS and held at its first event), and reports whether the event was signalled.
ATTACH_FAILS = r"""
import ctypes, json, os, subprocess, sys
from ctypes import wintypes as wt
k32 = ctypes.WinDLL("kernel32", use_last_error=True)
k32.CreateEventW.restype = wt.HANDLE
k32.CreateEventW.argtypes = [ctypes.c_void_p, wt.BOOL, wt.BOOL, wt.LPCWSTR]
k32.WaitForSingleObject.argtypes = [wt.HANDLE, wt.DWORD]
event = k32.CreateEventW(None, True, False, None)
os.set_handle_inheritable(event, True)
held = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], creationflags=0x1)  # DEBUG_PROCESS
try:
    handler = subprocess.run([sys.executable, "-I", "-m", "dumplib._windows.aedebug", "-p", str(held.pid),
                              "-e", str(event), "-j", "0"], close_fds=False, capture_output=True, timeout=200)
    signalled = k32.WaitForSingleObject(event, 0) == 0
finally:
    held.kill()
print(json.dumps({"signalled": signalled, "rc": handler.returncode, "err": handler.stderr.decode()[-2000:]}))
"""


def test_aedebug_event_signalled_when_attach_fails(rig: Rig, tmp_path: Path, crash_dir: Path) -> None:
    """The handler cannot attach (the process already has a debugger): it still signals the event
    (the crashed process would otherwise wait for ever) and logs why."""
    dumps = crash_dir
    done = cli(rig, "postmortem", "install", "--dir", windows_path(dumps), "--max-per", "100:100", "--json")
    assert done.returncode == 0, done.stderr
    try:
        ran = rig.run_python(["-c", ATTACH_FAILS], timeout=300)
    finally:
        cli(rig, "postmortem", "uninstall", "--force")
    assert ran.returncode == 0, ran.stderr
    answer = json.loads(ran.stdout.strip().splitlines()[-1])
    assert answer["rc"] == 0 and answer["signalled"] is True, answer
    [record] = [json.loads(line) for line in (dumps / "postmortem.log").read_text().splitlines()]
    assert record["outcome"] == "attach-failed" and record["jit"].startswith("none"), record
    assert not list(dumps.glob("*.dmp*")), list(dumps.iterdir())


#: JIT_DEBUG_INFO laid out in this process's own memory, then judged by the handler's validation.
JIT_CHECKS = r"""
import ctypes, json, os, subprocess, sys
from dumplib._windows import aedebug, jitapi, debugapi
other = subprocess.Popen([sys.executable, "-c", "import ctypes, time; "
                          "print(ctypes.windll.kernel32.GetCurrentThreadId(), flush=True); time.sleep(60)"],
                         stdout=subprocess.PIPE, text=True)
other_tid = int(other.stdout.readline())
me = ctypes.windll.kernel32.GetCurrentThreadId()
record = debugapi.EXCEPTION_RECORD(ExceptionCode=0xC0000005, ExceptionAddress=0x1234, NumberParameters=2)
context = ctypes.create_string_buffer(jitapi.CONTEXT_SIZE)
def judge(size=40, tid=me, address=0x1234, rec=ctypes.addressof(record)):
    info = jitapi.JIT_DEBUG_INFO(size, 0x8664, tid, 0, address, rec, ctypes.addressof(context))
    try:
        event = aedebug.exception_from_jit(os.getpid(), ctypes.addressof(info))
    except aedebug.NoJitInfo as exc:
        return "refused: " + str(exc)
    return [event.tid, event.code, event.address]
try:
    out = {"valid": judge(), "size": judge(size=104), "foreign_thread": judge(tid=other_tid),
           "no_thread": judge(tid=0), "other_address": judge(address=0x5678), "unreadable": judge(rec=8),
           "me": me}
finally:
    other.kill()
print(json.dumps(out))
"""


def test_jit_debug_info_is_trusted_only_when_it_holds_up(rig: Rig) -> None:
    """The handler takes the JIT_DEBUG_INFO path only for a structure of the right size, naming a thread of
    the crashed process, whose record reads and names the same address; anything else is the debugger path."""
    ran = rig.run_python(["-c", JIT_CHECKS], timeout=200)
    assert ran.returncode == 0, ran.stderr
    out = json.loads(ran.stdout.strip().splitlines()[-1])
    assert out["valid"] == [out["me"], 0xC0000005, 0x1234], out
    assert "size field 104" in out["size"], out
    assert "not a thread of process" in out["foreign_thread"] and "not a thread" in out["no_thread"], out
    assert "another address" in out["other_address"], out
    assert "unreadable" in out["unreadable"], out


#: The handler started for a process that did not crash: no second chance ever comes.
NO_CRASH = r"""
import ctypes, json, os, subprocess, sys, time
from ctypes import wintypes as wt
k32 = ctypes.WinDLL("kernel32", use_last_error=True)
k32.CreateEventW.restype = wt.HANDLE
k32.CreateEventW.argtypes = [ctypes.c_void_p, wt.BOOL, wt.BOOL, wt.LPCWSTR]
k32.WaitForSingleObject.argtypes = [wt.HANDLE, wt.DWORD]
k32.CheckRemoteDebuggerPresent.argtypes = [wt.HANDLE, ctypes.POINTER(wt.BOOL)]
event = k32.CreateEventW(None, True, False, None)
os.set_handle_inheritable(event, True)
alive = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(0.05)"])
try:
    handler = subprocess.run([sys.executable, "-I", "-m", "dumplib._windows.aedebug", "-p", str(alive.pid),
                              "-e", str(event), "-j", "0"], close_fds=False, capture_output=True, timeout=120)
    signalled = k32.WaitForSingleObject(event, 0) == 0
    debugged = wt.BOOL()
    k32.CheckRemoteDebuggerPresent(wt.HANDLE(alive._handle), ctypes.byref(debugged))
    time.sleep(0.5)
    running = alive.poll() is None
finally:
    alive.kill()
print(json.dumps({"signalled": signalled, "rc": handler.returncode, "debugged": bool(debugged.value),
                  "running": running, "err": handler.stderr.decode()[-2000:]}))
"""


def test_aedebug_without_a_second_chance_detaches_and_lets_the_process_run(rig: Rig, tmp_path: Path,
                                                                          crash_dir: Path) -> None:
    """No second chance comes (the process did not crash): within a quarter of --max-seconds the handler
    detaches, the process runs on, no longer debugged, and the log line says so."""
    dumps = crash_dir
    done = cli(rig, "postmortem", "install", "--dir", windows_path(dumps), "--max-per", "100:100",
               "--max-seconds", "40", "--json")
    assert done.returncode == 0, done.stderr
    try:
        ran = rig.run_python(["-c", NO_CRASH], timeout=300)
    finally:
        cli(rig, "postmortem", "uninstall", "--force")
    assert ran.returncode == 0, ran.stderr
    answer = json.loads(ran.stdout.strip().splitlines()[-1])
    assert answer["rc"] == 0 and answer["signalled"] is True, answer
    assert answer["running"] is True and answer["debugged"] is False, answer
    [record] = [json.loads(line) for line in (dumps / "postmortem.log").read_text().splitlines()]
    assert record["outcome"] == "no-exception" and "detached" in record["why"], record
    assert not list(dumps.glob("*.dmp*")), list(dumps.iterdir())


#: Every process install starts is seen by the interpreter's own audit hook (the subprocess.Popen
#: event, PEP 578): refused *first* means app.exe was never run, elevated, to ask what it would import.
INSTALL_FROM_APP = r'''
import json, sys
started = []
sys.addaudithook(lambda event, args: started.append(str(args[1])) if event == "subprocess.Popen" else None)
from dumplib import postmortem
try:
    postmortem.install(sys.argv[1])
    said = {"installed": True}
except Exception as exc:
    said = {"error": type(exc).__name__, "argument": getattr(exc, "argument", None), "message": str(exc)}
said["started"] = started
print(json.dumps(said))
'''


def test_aedebug_install_from_a_program_embedding_python_is_refused_and_changes_nothing(rig: Rig,
                                                                                        crash_dir: Path) -> None:
    """In a program that embeds Python, sys.executable names that program (app.exe): install would run
    it elevated to ask what the handler imports, and register it as the debugger of every crash. Here
    python.exe copied as app.exe beside its DLL (the embedded distribution's ._pth still applies), so
    that sys.executable is what Windows says the program is."""
    app = rig.pydir / "app.exe"
    shutil.copyfile(rig.pydir / "python.exe", app)
    before = registry(rig)
    try:
        done = subprocess.run(["wine", str(app), "-X", "utf8", "-c", INSTALL_FROM_APP, windows_path(crash_dir)],
                              env=rig.env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        said = json.loads(done.stdout.strip().splitlines()[-1])
        if said.get("installed"):  # a failing test leaves no handler registered in the shared prefix
            cli(rig, "postmortem", "uninstall", "--force")
        assert said.get("error") == "PostmortemRefused" and said["argument"] == "python", said
        assert "app.exe" in said["message"] and "Nothing changed" in said["message"], said
        assert said["started"] == [], said  # nothing run before the refusal
        assert registry(rig) == before
    finally:
        app.unlink()
