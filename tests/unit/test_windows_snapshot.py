"""Snapshot dumps (PssCaptureSnapshot) inside a Windows python.exe, against real processes.

What needs a real PssCaptureSnapshot (the target runs during the write, the dump's streams, no
clone left behind, a short pause) runs on real Windows (.github/workflows/windows.yml) and skips
under Wine, which does not export it, with a reason starting "real Windows only". Wine's side of
the promise (the fallback, the refusal) is proved for real by tests/e2e_wine/test_snapshot_wine.py.
"""
import contextlib
import ctypes
import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

if sys.platform != "win32":
    pytest.skip("Windows backend: run inside Windows python.exe (real Windows, or Wine via the Wine tests)",
                allow_module_level=True)

import psutil  # noqa: E402

import dumplib  # noqa: E402
from dumplib._windows import dbghelp, kernel32, snapshot, wrappers, writer  # noqa: E402
from dumplib._windows.access import DUMP_ACCESS  # noqa: E402
from dumplib._windows.policy import DUMPER_MACHINE  # noqa: E402
from dumplib._windows.verify import missing_streams  # noqa: E402
from dumplib._windows._common import ERROR_ACCESS_DENIED, Win32Error  # noqa: E402
from dumplib._windows.ntdll import UNDER_WINE  # noqa: E402
from dumplib.formats.minidump import read_minidump  # noqa: E402
from dumplib.kinds import DumpKind  # noqa: E402
from dumplib._windows.masks import windows_mask  # noqa: E402


def real_windows_only(reason: str) -> None:
    if UNDER_WINE:
        pytest.skip(f"real Windows only: {reason}")


# A target with a 512 MiB private block (so a full dump takes long enough to watch) starting with
# marker A; `poke` overwrites it with marker B and answers, `show` prints what is there now.
_TARGET = textwrap.dedent("""
    import ctypes, json, os, sys, threading, time, uuid
    a, b = (f"DUMPLIB-{w}-{uuid.uuid4().hex}" for w in ("BEFORE", "AFTER"))
    block = ctypes.create_string_buffer(512 << 20)
    for off in range(0, len(block), 4096):
        block[off] = 1  # touch every page: private commit the clone must cover
    block.value = a.encode()
    threading.Thread(target=lambda: [time.sleep(0.001) for _ in iter(int, 1)], daemon=True).start()
    print(json.dumps({"pid": os.getpid(), "before": a, "after": b, "address": ctypes.addressof(block)}), flush=True)
    for line in sys.stdin:
        if line.strip() == "poke":
            block.value = b.encode()
            print("poked", flush=True)
        elif line.strip() == "show":
            print(block.value.decode(), flush=True)
""")


class _Target:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _TARGET], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: "queue.Queue[str]" = queue.Queue()
        first = self.proc.stdout.readline()
        assert first, self.proc.stderr.read()
        self.info = json.loads(first)
        self.pid = int(self.info["pid"])
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def ask(self, command: str, timeout: float) -> str:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.lines.get(timeout=timeout)



@pytest.fixture()
def clone_pids(monkeypatch):
    """The pid of every VA clone the snapshot path creates, read from the snapshot itself
    (PssQuerySnapshot -> VaCloneHandle -> GetProcessId) when the backend asks what it costs."""
    pids = []
    real = wrappers.snapshot_clone_cost
    get_process_id = ctypes.WinDLL("kernel32", use_last_error=True).GetProcessId
    get_process_id.argtypes, get_process_id.restype = [ctypes.c_void_p], ctypes.c_uint32

    def recording(snapshot_handle):
        info = kernel32.PSS_VA_CLONE_INFORMATION()
        kernel32.PssQuerySnapshot(snapshot_handle, snapshot.PSS_QUERY_VA_CLONE_INFORMATION, ctypes.byref(info),
                                  ctypes.sizeof(info))
        pids.append(get_process_id(info.VaCloneHandle))
        return real(snapshot_handle)

    monkeypatch.setattr(wrappers, "snapshot_clone_cost", recording)
    return pids


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not psutil.pid_exists(pid)


@pytest.fixture()
def big_target():
    t = _Target()
    try:
        yield t
    finally:
        with contextlib.suppress(Exception):
            t.proc.stdin.close()
        try:
            t.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            t.proc.kill()
            t.proc.wait()


# -- what runs here and under Wine ----------------------------------------------------------------

def test_pss_functions_are_bound_where_kernel32_has_them_and_none_where_not():
    exported = hasattr(ctypes.WinDLL("kernel32"), "PssCaptureSnapshot")
    bound = (kernel32.PssCaptureSnapshot, kernel32.PssQuerySnapshot, kernel32.PssFreeSnapshot)
    assert all(f is not None for f in bound) if exported else all(f is None for f in bound)
    assert exported is not UNDER_WINE  # Wine 8 lacks them, Windows 8.1+ has them


def test_the_snapshot_callback_answers_snapshot_and_leaves_cancel_to_the_monitor():
    monitor = writer.WriteMonitor(0, None)
    routine = writer.snapshot_callback(monitor)
    callback_input = dbghelp.MINIDUMP_CALLBACK_INPUT()
    output = dbghelp.MINIDUMP_CALLBACK_OUTPUT_CANCEL()
    callback_input.CallbackType = 16  # IsProcessSnapshotCallback (dbghelp.h)
    assert routine(None, ctypes.byref(callback_input), ctypes.byref(output))
    assert ctypes.c_int32.from_buffer(output).value == 1  # Status = S_FALSE: "this is a snapshot"
    # A cancel request still goes to the monitor: with an interrupt pending it says Cancel.
    callback_input.CallbackType = dbghelp.CancelCallback
    output.CheckCancel = output.Cancel = 0
    monitor.interrupt = KeyboardInterrupt()
    assert routine(None, ctypes.byref(callback_input), ctypes.byref(output))
    assert output.Cancel and output.CheckCancel


def test_the_bindings_pass_the_layouts_the_layout_tests_checked():
    for name in ("PSS_VA_CLONE_INFORMATION", "PROCESS_MEMORY_COUNTERS_EX", "MEMORYSTATUSEX"):
        assert getattr(kernel32, name) is getattr(snapshot.NATIVE, name), name


def test_the_commit_check_reads_what_windows_reports():
    available, limit = wrappers.commit_room()
    assert 0 < available <= limit
    handle = wrappers.open_process(os.getpid(), kernel32.PROCESS_QUERY_INFORMATION | kernel32.PROCESS_VM_READ)
    with wrappers.handle_closing(handle):
        ours = wrappers.private_bytes(handle)
    # psutil's pagefile is GetProcessMemoryInfo's PagefileUsage, documented as the same commit charge.
    assert ours > 0 and abs(ours - psutil.Process().memory_info().pagefile) <= 16 << 20


def test_private_bytes_grow_with_committed_memory():
    handle = wrappers.open_process(os.getpid(), kernel32.PROCESS_QUERY_INFORMATION | kernel32.PROCESS_VM_READ)
    with wrappers.handle_closing(handle):
        before = wrappers.private_bytes(handle)
        block = ctypes.create_string_buffer(128 << 20)
        after = wrappers.private_bytes(handle)
    assert after - before >= 120 << 20 and len(block)


# -- the backend's own discipline, with PSS stood in where Windows lacks it --------------------------
#
# Wine has no PssCaptureSnapshot, so here a stand-in returns a second real handle on the target as
# the "snapshot": MiniDumpWriteDump, verification, the sidecar and every way out are real; only
# what PSS itself does is not (that is the real-Windows tests below).

SMALL_TARGET = Path(__file__).resolve().parents[1] / "winside" / "target.py"


@pytest.fixture()
def small_target():
    proc = subprocess.Popen([sys.executable, str(SMALL_TARGET)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        yield json.loads(line)["pid"]
    finally:
        with contextlib.suppress(Exception):
            proc.stdin.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class StandInPss:
    """PssCaptureSnapshot / PssQuerySnapshot / PssFreeSnapshot as the backend sees them."""

    def __init__(self, pid: int, fail_with: int = 0, write_fails: bool = False) -> None:
        self.pid, self.fail_with, self.write_fails = pid, fail_with, write_fails
        self.captured, self.freed, self.written_from = [], [], []

    def capture(self, process, flags, context, out):
        if self.fail_with:
            raise Win32Error("PssCaptureSnapshot", self.fail_with)
        handle = wrappers.open_process(self.pid, DUMP_ACCESS)
        out._obj.value = handle
        self.captured.append((handle, flags, context))
        return 0

    def query(self, snapshot_handle, information_class, buffer, length):
        raise Win32Error("PssQuerySnapshot", 50)  # ERROR_NOT_SUPPORTED: the cost is then unknown

    def free(self, process, snapshot_handle):
        assert process == kernel32.GetCurrentProcess()
        self.freed.append(snapshot_handle)
        wrappers.close_handle(snapshot_handle)
        return 0

    def install(self, monkeypatch) -> "StandInPss":
        monkeypatch.setattr(kernel32, "PssCaptureSnapshot", self.capture)
        monkeypatch.setattr(kernel32, "PssQuerySnapshot", self.query)
        monkeypatch.setattr(kernel32, "PssFreeSnapshot", self.free)
        real = dbghelp.MiniDumpWriteDump

        def recording(process, *args):
            self.written_from.append(process)
            done = real(process, *args)
            if self.write_fails:
                raise Win32Error("MiniDumpWriteDump", ERROR_ACCESS_DENIED)
            return done

        monkeypatch.setattr(dbghelp, "MiniDumpWriteDump", recording)
        return self


def test_a_snapshot_dump_is_written_from_the_snapshot_which_is_freed_once(small_target, tmp_path, monkeypatch):
    pss = StandInPss(small_target).install(monkeypatch)
    mask = windows_mask(DumpKind.MINI)
    result = dumplib.create_dump(small_target, str(tmp_path), "mini", snapshot=True)
    [(handle, flags, context)] = pss.captured
    assert flags == snapshot.capture_flags(mask) and context == snapshot.context_flags(DUMPER_MACHINE)
    assert pss.written_from == [handle] and pss.freed == [handle]
    assert result.snapshot is True and result.snapshot_bytes is None
    assert not any("snapshot" in w for w in result.warnings), result.warnings
    # Only the (instant) capture counts as the pause, not the seconds MiniDumpWriteDump took.
    assert result.stopped_seconds is not None and result.stopped_seconds < min(0.5, result.seconds / 2), result
    side = json.loads(open(result.sidecar, encoding="utf-8").read())
    assert side["snapshot"] is True and side["stopped_seconds"] == result.stopped_seconds
    assert read_minidump(result.path).pid == small_target


class Stop(Exception):
    pass


@pytest.mark.parametrize("way_out", ["abandoned", "ctrl-c", "write-failed"])
def test_a_snapshot_dump_that_fails_during_the_write_still_frees_the_snapshot(small_target, tmp_path, monkeypatch,
                                                                             way_out):
    pss = StandInPss(small_target, write_fails=way_out == "write-failed").install(monkeypatch)

    def progress(done: int, seconds: float) -> None:
        if way_out == "abandoned":
            raise Stop()  # the watchdog's verdict
        if way_out == "ctrl-c" and "sent" not in pss.__dict__:
            pss.sent = True
            signal.raise_signal(signal.SIGINT)  # Ctrl-C while MiniDumpWriteDump runs

    expected = {"abandoned": Stop, "ctrl-c": KeyboardInterrupt, "write-failed": dumplib.AccessDenied}[way_out]
    with pytest.raises(expected):
        dumplib.create_dump(small_target, str(tmp_path), "mini", snapshot=True, progress=progress)
    assert len(pss.captured) == 1 and pss.freed == [pss.captured[0][0]]
    assert list(tmp_path.iterdir()) == []


def test_a_failed_capture_falls_back_with_auto_and_refuses_with_true(small_target, tmp_path, monkeypatch):
    pss = StandInPss(small_target, fail_with=8).install(monkeypatch)  # ERROR_NOT_ENOUGH_MEMORY
    with pytest.raises(dumplib.TargetRefused) as refused:
        dumplib.create_dump(small_target, str(tmp_path), "mini", snapshot=True)
    assert refused.value.reason == "snapshot-unavailable" and "PssCaptureSnapshot failed" in str(refused.value)
    assert list(tmp_path.iterdir()) == []
    result = dumplib.create_dump(small_target, str(tmp_path), "mini", snapshot="auto", sidecar=False)
    assert result.snapshot is False and any("PssCaptureSnapshot failed" in w for w in result.warnings)
    assert pss.captured == [] and pss.freed == [] and len(pss.written_from) == 1  # the usual dump, from the target
    assert read_minidump(result.path).pid == small_target


# -- what only a real PssCaptureSnapshot shows ----------------------------------------------------

def test_the_target_runs_during_a_snapshot_dump_which_holds_the_memory_of_the_capture(big_target, clone_pids,
                                                                                       tmp_path):
    real_windows_only("PssCaptureSnapshot is not exported by Wine")
    seen = {}

    def progress(done: int, seconds: float) -> None:
        if done and "poked" not in seen:  # bytes in the file: the capture is over, the write under way
            seen["clone alive"] = [psutil.pid_exists(p) for p in clone_pids]
            # Suspended targets do not answer: an answer during the write is the target running.
            seen["poked"] = big_target.ask("poke", timeout=20)

    result = dumplib.create_dump(big_target.pid, str(tmp_path), "full", snapshot=True, progress=progress)
    assert seen.get("poked") == "poked", "no progress during the write: the dump was too quick to watch"
    assert seen["clone alive"] == [True], seen  # the clone lived during the write...
    assert _gone(clone_pids[0]), "the clone outlived the dump: PssFreeSnapshot was skipped"  # ...and was ended
    dump = read_minidump(result.path)
    address, before, after = big_target.info["address"], big_target.info["before"], big_target.info["after"]
    assert dump.read_memory(address, len(before)) == before.encode()  # the memory of the capture...
    assert big_target.ask("show", timeout=20) == after  # ...not of now
    assert result.snapshot is True and not any("snapshot" in w for w in result.warnings), result.warnings
    # The target was suspended only while the snapshot was taken, not for the write.
    assert result.stopped_seconds is not None and result.stopped_seconds < max(1.0, result.seconds / 2), result
    assert result.snapshot_bytes is None or result.snapshot_bytes > 0
    side = json.loads(open(result.sidecar, encoding="utf-8").read())
    assert side["snapshot"] is True and side["stopped_seconds"] == result.stopped_seconds
    assert side["snapshot_bytes"] == result.snapshot_bytes


def test_a_snapshot_mini_dump_holds_every_thread_and_the_streams_its_mask_asks_for(big_target, clone_pids,
                                                                                    tmp_path):
    real_windows_only("PssCaptureSnapshot is not exported by Wine")
    result = dumplib.create_dump(big_target.pid, str(tmp_path), "mini", snapshot=True, sidecar=False)
    dump = read_minidump(result.path)
    assert result.snapshot is True and dump.pid == big_target.pid
    assert len(dump.threads) == psutil.Process(big_target.pid).num_threads() >= 2
    assert all(t.stack_size for t in dump.threads)
    names = [m.name.lower().rsplit("\\", 1)[-1] for m in dump.modules]
    assert "python.exe" in names and "kernel32.dll" in names, names
    assert missing_streams(dump, windows_mask(DumpKind.MINI)) == {}
    assert len(clone_pids) == 1 and _gone(clone_pids[0])


def test_a_cancelled_snapshot_dump_frees_its_clone(big_target, clone_pids, tmp_path):
    real_windows_only("PssCaptureSnapshot is not exported by Wine")
    seen = {}

    def progress(done: int, seconds: float) -> None:
        if not done:
            return  # still capturing
        seen.setdefault("clone alive", [psutil.pid_exists(p) for p in clone_pids])
        raise Stop()  # the watchdog's way: cancels MiniDumpWriteDump through CancelCallback

    with pytest.raises(Stop):
        dumplib.create_dump(big_target.pid, str(tmp_path), "full", snapshot=True, progress=progress)
    assert seen.get("clone alive") == [True], seen
    assert _gone(clone_pids[0]), "the clone outlived a cancelled dump: PssFreeSnapshot was skipped"
    assert list(tmp_path.iterdir()) == []


def test_the_snapshot_path_opens_the_target_with_create_process_and_no_write_access(big_target, tmp_path,
                                                                                 monkeypatch):
    real_windows_only("PssCaptureSnapshot is not exported by Wine")
    opens = []
    real = wrappers.open_process

    def recording(pid, access):
        opens.append(access)
        return real(pid, access)

    monkeypatch.setattr(wrappers, "open_process", recording)
    mask = windows_mask(DumpKind.MINI)
    dumplib.create_dump(big_target.pid, str(tmp_path), "mini", snapshot=True, sidecar=False)
    assert opens[-1] == snapshot.snapshot_access(mask) == 0x4D0, [hex(a) for a in opens]


def test_pss_capture_snapshot_without_create_process_is_a_typed_access_denied(big_target):
    real_windows_only("PssCaptureSnapshot is not exported by Wine")
    handle = wrappers.open_process(big_target.pid, kernel32.PROCESS_QUERY_INFORMATION | kernel32.PROCESS_VM_READ)
    with wrappers.handle_closing(handle):
        out = ctypes.c_void_p()
        with pytest.raises(Win32Error) as caught:
            kernel32.PssCaptureSnapshot(handle, snapshot.PSS_CAPTURE_VA_CLONE, 0, ctypes.byref(out))
    assert caught.value.winerror == ERROR_ACCESS_DENIED and caught.value.function == "PssCaptureSnapshot"
