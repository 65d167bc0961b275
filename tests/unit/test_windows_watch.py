"""dumplib.watch on Windows (its exit dump, its CPU figures), checked inside a Windows python.exe.

Runs on real Windows (.github/workflows/windows.yml). Under Wine it skips as "real Windows only":
Wine releases the memory before it reports EXIT_PROCESS_DEBUG_EVENT, which
tests/e2e_wine/test_watch_exit_wine.py checks from the other side (the watcher says so; no dump).
"""
import ctypes
import json
import os
import signal
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

def _go_once_watching(proc, events=None):
    """An on_event callback that tells the target to act once the watch says "watching": the debugger
    is attached by then (a timer raced the attach at load 10, and the fault came before it)."""
    def on_event(event):
        if events is not None:
            events.append(event)
        if event.event == "watching":
            proc.stdin.write("go\n")
            proc.stdin.flush()
    return on_event


def real_windows_only(reason):
    if UNDER_WINE:
        pytest.skip(f"real Windows only: {reason}")


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
        results = dumplib.watch(pid, dumplib.ProcessExit(), path=tmp_path / "exit_EXCEPTIONCODE.dmp", kind="full",
                                timeout=60, on_event=_go_once_watching(proc, events))
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
    from dumplib._windows.policy import DUMPER_MACHINE
    from dumplib._windows.policy import CONTEXT_LAYOUTS

    layout = CONTEXT_LAYOUTS[DUMPER_MACHINE]
    script = tmp_path / "faulter.py"
    script.write_text(FAULTER)
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pid = json.loads(proc.stdout.readline())["pid"]
        results = dumplib.watch(pid, dumplib.ExceptionRaised([0xC0000005]), path=tmp_path / "ex.dmp", kind="mini",
                                timeout=60, on_event=_go_once_watching(proc))
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


CRASHER = textwrap.dedent("""
    import ctypes, json, os, sys
    k = ctypes.WinDLL("kernel32", use_last_error=True)
    FILTER = ctypes.WINFUNCTYPE(ctypes.c_long, ctypes.c_void_p)

    @FILTER
    def on_crash(info):
        os.write(1, b"filter ran\\n")  # what a crash reporter (Crashpad, Sentry) would do here
        return 1  # EXCEPTION_EXECUTE_HANDLER: the process ends with the exception's code

    k.SetUnhandledExceptionFilter.argtypes = [FILTER]
    k.SetUnhandledExceptionFilter.restype = ctypes.c_void_p
    k.SetUnhandledExceptionFilter(on_crash)
    k.CreateThread.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_ulong,
                               ctypes.c_void_p]
    k.CreateThread.restype = ctypes.c_void_p
    print(json.dumps({"pid": os.getpid()}), flush=True)
    sys.stdin.readline()
    thread = k.CreateThread(None, 0, ctypes.c_void_p(8), None, 0, None)  # starts at 8: nobody handles that
    k.WaitForSingleObject(ctypes.c_void_p(thread), 30000)
    os._exit(0)
""")


def _crash(tmp_path, watched):
    script = tmp_path / "crasher.py"
    script.write_text(CRASHER)
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pid = json.loads(proc.stdout.readline())["pid"]
        if not watched:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = (dumplib.watch(pid, dumplib.ExceptionRaised(first_chance=False), path=tmp_path / "crash.dmp",
                                 kind="mini", timeout=60, on_event=_go_once_watching(proc)) if watched else [])
        out, _ = proc.communicate(timeout=60)
        return proc.returncode, out, results
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_an_attached_watcher_keeps_the_programs_unhandled_exception_filter_from_running(tmp_path):
    """What docs/watch.md says a debugger changes (ProcDump -e alike): the program's own unhandled-
    exception filter runs without the watcher and not with it; the process ends with the code either way."""
    if UNDER_WINE:
        pytest.skip("real Windows only: Wine's UnhandledExceptionFilter and WER differ from Windows'")
    code, out, _ = _crash(tmp_path, watched=False)
    assert "filter ran" in out and code & 0xFFFFFFFF == 0xC0000005, (code, out)
    code, out, results = _crash(tmp_path, watched=True)
    assert len(results) == 1 and "filter ran" not in out, (code, out)
    assert code & 0xFFFFFFFF == 0xC0000005


# -- a write interrupted mid-way leaves no thread suspended (real Windows) --------------------------

BIG_FAULTER = textwrap.dedent("""
    import ctypes, json, os, sys, threading
    held = bytearray(1 << 30)  # ~1 GB of private memory, every page touched: a full dump takes seconds
    for i in range(0, len(held), 4096):
        held[i] = 1
    for _ in range(4):
        threading.Thread(target=threading.Event().wait, daemon=True).start()
    print(json.dumps({"pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        if line.strip() == "fault":
            try:
                ctypes.string_at(8, 1)
            except OSError:
                print("handled", flush=True)
        elif line.strip() == "ping":
            print("pong", flush=True)
""")

THREAD_SUSPEND_RESUME = 0x0002


def _suspend_counts(pid):
    """Each thread's suspend count, read the documented way: SuspendThread returns the previous
    count, and ResumeThread puts it back at once."""
    import psutil

    k = ctypes.WinDLL("kernel32", use_last_error=True)
    k.OpenThread.restype = ctypes.c_void_p
    k.SuspendThread.argtypes = k.ResumeThread.argtypes = k.CloseHandle.argtypes = [ctypes.c_void_p]
    counts = {}
    for t in psutil.Process(pid).threads():
        handle = k.OpenThread(THREAD_SUSPEND_RESUME, False, t.id)
        if not handle:
            continue
        try:
            before = k.SuspendThread(handle)
            k.ResumeThread(handle)
            counts[t.id] = before
        finally:
            k.CloseHandle(handle)
    return counts


def test_an_interrupted_full_exception_dump_leaves_every_thread_running(tmp_path):
    """Ctrl-Break to `dumplib watch` while MiniDumpWriteDump writes a full exception dump of a ~1 GB
    target (from the process itself, so its threads are suspended): the write is cancelled and
    waited for, nothing is kept, every thread's suspend count is 0 and the target answers."""
    if UNDER_WINE:
        pytest.skip("real Windows only: Wine's dbghelp neither suspends the target nor calls CancelCallback")
    script = tmp_path / "big.py"
    script.write_text(BIG_FAULTER)
    out = tmp_path / "dumps"
    out.mkdir()
    target = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    watcher = None
    try:
        pid = json.loads(target.stdout.readline())["pid"]
        watcher = subprocess.Popen(
            [sys.executable, "-m", "dumplib_cli", "watch", str(pid), "-o", str(out), "--exception", "AccessViolation",
             "--first-chance", "-k", "full", "--snapshot=off", "--max-pause", "off", "--no-space-check", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            creationflags=subprocess.CREATE_NEW_PROCESS_GROUP)
        events = []
        for line in watcher.stdout:
            events.append(json.loads(line))
            if events[-1]["event"] == "watching":
                break
        target.stdin.write("fault\n")
        target.stdin.flush()
        for line in watcher.stdout:
            events.append(json.loads(line))
            if events[-1]["event"] == "fired":
                break
        time.sleep(1.0)  # inside MiniDumpWriteDump by now: a 1 GB full dump takes longer
        watcher.send_signal(signal.CTRL_BREAK_EVENT)
        rest, err = watcher.communicate(timeout=300)
        assert watcher.returncode != 0, (rest, err)
        assert not any(json.loads(ln)["event"] == "dumped" for ln in rest.splitlines() if ln.startswith("{")), rest
        assert list(out.iterdir()) == [], "a dump or a temporary was left"
        counts = _suspend_counts(pid)
        assert counts and all(c == 0 for c in counts.values()), counts
        assert target.stdout.readline().strip() == "handled"  # the fault was passed back after the cancel
        target.stdin.write("ping\n")
        target.stdin.flush()
        assert target.stdout.readline().strip() == "pong"
    finally:
        for proc in (watcher, target):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


DAEMON_DUMPER = textwrap.dedent("""
    import sys, threading, time
    import dumplib
    pid, out = int(sys.argv[1]), sys.argv[2]
    threading.Thread(target=dumplib.create_dump, args=(pid, out, "full"),
                     kwargs=dict(space_check=False, max_pause=None, sidecar=False), daemon=True).start()
    time.sleep(1.0)  # inside MiniDumpWriteDump by now: a 1 GB full dump takes longer
    print("exiting", flush=True)
""")


def test_python_exiting_mid_write_on_a_daemon_thread_leaves_every_thread_running(tmp_path):
    """A library caller's full dump on a daemon thread when its Python exits: the exit cancels the
    write and waits for MiniDumpWriteDump to return, so every thread's suspend count is 0."""
    if UNDER_WINE:
        pytest.skip("real Windows only: Wine's dbghelp neither suspends the target nor calls CancelCallback")
    script, dumper = tmp_path / "big.py", tmp_path / "dumper.py"
    script.write_text(BIG_FAULTER)
    dumper.write_text(DAEMON_DUMPER)
    out = tmp_path / "dumps"
    out.mkdir()
    target = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pid = json.loads(target.stdout.readline())["pid"]
        done = subprocess.run([sys.executable, str(dumper), str(pid), str(out)], capture_output=True, text=True,
                              timeout=300)
        assert "exiting" in done.stdout, (done.stdout, done.stderr)
        counts = _suspend_counts(pid)
        assert counts and all(c == 0 for c in counts.values()), counts
        assert not list(out.glob("*.dmp")), "a cancelled dump was kept"
        target.stdin.write("ping\n")
        target.stdin.flush()
        assert target.stdout.readline().strip() == "pong"
    finally:
        if target.poll() is None:
            target.kill()
            target.wait()


# -- processes of other accounts (real Windows, elevated) -------------------------------------------

ACCOUNT_TARGET = textwrap.dedent("""
    import ctypes, json, os, sys, threading, time
    for _ in range(3):
        threading.Thread(target=threading.Event().wait, daemon=True).start()
    with open(sys.argv[1] + ".part", "w") as f:
        f.write(json.dumps({"pid": os.getpid()}))
    os.replace(sys.argv[1] + ".part", sys.argv[1])
    end = time.monotonic() + 300
    while time.monotonic() < end:
        try:
            ctypes.string_at(8, 1)  # a handled access violation every second, for the watcher
        except OSError:
            pass
        time.sleep(1)
""")


def _wait_for_pid(path):
    for _ in range(600):
        if path.exists():
            return json.loads(path.read_text())["pid"]
        time.sleep(0.1)
    raise AssertionError(f"the target never wrote {path}")


def _system_target(tmp_path):
    """A target started by the Task Scheduler as NT AUTHORITY\\SYSTEM; its pid."""
    script, pidfile, task = tmp_path / "account.py", tmp_path / "pid.json", f"dumplib-test-{os.getpid()}"
    script.write_text(ACCOUNT_TARGET)
    command = f'"{sys.executable}" "{script}" "{pidfile}"'
    subprocess.run(["schtasks", "/create", "/tn", task, "/ru", "SYSTEM", "/sc", "once", "/st", "23:59", "/tr",
                    command, "/f"], check=True, capture_output=True)
    subprocess.run(["schtasks", "/run", "/tn", task], check=True, capture_output=True)
    return _wait_for_pid(pidfile), lambda: subprocess.run(["schtasks", "/delete", "/tn", task, "/f"],
                                                          capture_output=True)


def _other_user_target(tmp_path):
    """A target started with CreateProcessWithLogonW as a local user created for the test; its pid."""
    import secrets
    from ctypes import wintypes as wt

    user, password = f"dlt{os.getpid()}", "Aa1!" + secrets.token_hex(12)
    subprocess.run(["net", "user", user, password, "/add"], check=True, capture_output=True)
    script, pidfile = tmp_path / "account.py", tmp_path / "pid.json"
    script.write_text(ACCOUNT_TARGET)
    subprocess.run(["icacls", str(tmp_path), "/grant", f"{user}:(OI)(CI)M"], check=True, capture_output=True)

    class STARTUPINFO(ctypes.Structure):
        _fields_ = [("cb", wt.DWORD), ("lpReserved", wt.LPWSTR), ("lpDesktop", wt.LPWSTR), ("lpTitle", wt.LPWSTR)] + [
            (n, wt.DWORD) for n in ("dwX", "dwY", "dwXSize", "dwYSize", "dwXCountChars", "dwYCountChars",
                                    "dwFillAttribute", "dwFlags")] + [
            ("wShowWindow", wt.WORD), ("cbReserved2", wt.WORD), ("lpReserved2", ctypes.c_void_p),
            ("hStdInput", wt.HANDLE), ("hStdOutput", wt.HANDLE), ("hStdError", wt.HANDLE)]

    class PROCESS_INFORMATION(ctypes.Structure):
        _fields_ = [("hProcess", wt.HANDLE), ("hThread", wt.HANDLE), ("dwProcessId", wt.DWORD),
                    ("dwThreadId", wt.DWORD)]

    advapi = ctypes.WinDLL("advapi32", use_last_error=True)
    si, pi = STARTUPINFO(), PROCESS_INFORMATION()
    si.cb = ctypes.sizeof(si)
    command = ctypes.create_unicode_buffer(f'"{sys.executable}" "{script}" "{pidfile}"')
    ok = advapi.CreateProcessWithLogonW(user, ".", password, 1, None, command, 0x08000000, None, str(tmp_path),
                                        ctypes.byref(si), ctypes.byref(pi))  # LOGON_WITH_PROFILE, CREATE_NO_WINDOW
    assert ok, ctypes.WinError(ctypes.get_last_error())
    pid = _wait_for_pid(pidfile)

    def cleanup():
        subprocess.run(["taskkill", "/f", "/pid", str(pid)], capture_output=True)
        subprocess.run(["net", "user", user, "/delete"], capture_output=True)
    return pid, cleanup


def _thread_ips(path):
    """(thread id, instruction pointer, stack size) of each thread in the dump, from the file itself."""
    import struct

    from dumplib._windows.policy import DUMPER_MACHINE
    from dumplib._windows.policy import CONTEXT_LAYOUTS

    layout = CONTEXT_LAYOUTS[DUMPER_MACHINE]
    data = open(path, "rb").read()
    count, directory = struct.unpack_from("<II", data, 8)
    for i in range(count):
        kind, size, rva = struct.unpack_from("<III", data, directory + 12 * i)
        if kind == 3:  # ThreadListStream: MINIDUMP_THREAD entries of 48 bytes
            out = []
            for n in range(struct.unpack_from("<I", data, rva)[0]):
                entry = rva + 4 + 48 * n
                tid = struct.unpack_from("<I", data, entry)[0]
                stack_size = struct.unpack_from("<I", data, entry + 32)[0]
                ctx_rva = struct.unpack_from("<I", data, entry + 44)[0]
                ip = int.from_bytes(data[ctx_rva + layout.ip_offset:ctx_rva + layout.ip_offset + layout.ip_size],
                                    "little")
                out.append((tid, ip, stack_size))
            return out
    raise AssertionError("no thread list")


def _dumps_and_watches_every_thread(pid, tmp_path):
    import psutil

    threads = psutil.Process(pid).num_threads()
    for kind, snapshot in (("mini", False), ("full", False), ("mini", True)):
        result = dumplib.create_dump(pid, str(tmp_path / f"{kind}-{snapshot}.dmp"), kind, snapshot=snapshot,
                                     sidecar=False)
        seen = _thread_ips(result.path)
        assert len(seen) >= threads - 1, (kind, snapshot, seen, threads)  # one may end meanwhile
        assert all(ip and stack for _, ip, stack in seen), (kind, snapshot, seen)
    results = dumplib.watch(pid, dumplib.ExceptionRaised(["AccessViolation"]), path=tmp_path / "watched.dmp",
                            kind="mini", timeout=60)
    assert len(results) == 1 and _thread_ips(results[0].path)


def test_a_system_process_is_dumped_with_every_thread_and_watched(tmp_path):
    if UNDER_WINE:
        pytest.skip("real Windows only: Wine runs every process as one user with no access checks")
    pid, cleanup = _system_target(tmp_path)
    try:
        _dumps_and_watches_every_thread(pid, tmp_path)
    finally:
        subprocess.run(["taskkill", "/f", "/pid", str(pid)], capture_output=True)
        cleanup()


def test_another_users_process_is_dumped_with_every_thread_and_watched(tmp_path):
    if UNDER_WINE:
        pytest.skip("real Windows only: Wine runs every process as one user with no access checks")
    pid, cleanup = _other_user_target(tmp_path)
    try:
        _dumps_and_watches_every_thread(pid, tmp_path)
    finally:
        cleanup()


# -- the target goes on once its memory is read (issue #16) -----------------------------------------

def _child(tmp_path, source):
    """A python.exe running *source*; its first stdout line (JSON) and the Popen."""
    script = tmp_path / "child.py"
    script.write_text(source)
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return proc, json.loads(proc.stdout.readline())


def _stop(proc):
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("compress", [None, "zstd"], ids=["plain", "raw-then-zstd"])
def test_the_writer_lets_a_handed_over_process_go_once_its_dump_is_written_not_after_the_rest(tmp_path, compress):
    """What the debug loop waits for (handover.target_runs): called once, when the raw dump is whole in its
    temporary and before the read-back, the compression, the sidecar and the rename."""
    from dumplib._windows import handover

    proc, info = _child(tmp_path, FAULTER)
    out = tmp_path / "dumps"
    out.mkdir()
    seen = []

    def give_back():
        temps = {p.name: p.stat().st_size for p in out.iterdir()}
        seen.append(temps)

    try:
        with handover.handed_over(info["pid"], give_back):
            result = dumplib.create_dump(info["pid"], str(out / "x.dmp"), "mini", compress=compress)
    finally:
        _stop(proc)
    assert len(seen) == 1, seen
    (at_release,) = seen
    # Nothing placed yet: no dump, no sidecar.
    assert all(name.startswith(".dumplib-") for name in at_release), at_release
    if compress is None:
        # The raw dump is whole in its temporary already: the size the placed dump has.
        assert list(at_release.values()) == [os.path.getsize(result.path)], (at_release, result.path)
    assert os.path.exists(result.path) and os.path.exists(result.path + ".json")


# A target with 16 MiB of random bytes (more for the compressor than the interpreter alone) and a marker. Its main
# thread faults when told ("fault N": N access violations in a row); the handler's first act overwrites
# the marker with its reverse, which exists nowhere in the process before, then says "handled". Another
# thread answers "ping" at any time.
HANDLER_MARKS = textwrap.dedent("""
    import ctypes, json, os, sys, threading, uuid
    heap = os.urandom(16 << 20)
    before = ("BEFORE-" + uuid.uuid4().hex).encode()
    mark = ctypes.create_string_buffer(64)
    ctypes.memmove(mark, before, len(before))
    faults, go = [], threading.Event()

    def commands():
        for line in sys.stdin:
            word = line.split()
            if word == ["ping"]:
                os.write(1, b"pong\\n")  # one write: the two threads' lines never interleave
            elif word[:1] == ["fault"]:
                faults.append(int(word[1]))
                go.set()

    threading.Thread(target=commands, daemon=True).start()
    print(json.dumps({"pid": os.getpid(), "before": before.decode()}), flush=True)
    go.wait()
    for _ in range(faults[0]):
        try:
            ctypes.string_at(8, 1)
        except OSError:
            ctypes.memmove(mark, bytes(reversed(before)), len(before))
            os.write(1, b"handled\\n")
    threading.Event().wait()
""")


class _Lines:
    """The child's stdout lines, each with the moment it was read."""

    def __init__(self, proc):
        self.lines = []
        self._proc = proc
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self._proc.stdout:
            self.lines.append((time.monotonic(), line.strip()))

    def when(self, text, nth=1, deadline=60.0):
        """The moment the *nth* line *text* was read (waiting for it, bounded)."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            found = [at for at, line in list(self.lines) if line == text]
            if len(found) >= nth:
                return found[nth - 1]
            time.sleep(0.01)
        raise AssertionError(f"no {text!r} #{nth} from the target within {deadline} s: {self.lines}")


def _watch_faults(tmp_path, faults, count, on_event=None):
    """Watch HANDLER_MARKS for first-chance access violations (full dumps, zstd, no snapshot) while it
    faults *faults* times; (results, events with their moments, the target's lines, its facts)."""
    proc, info = _child(tmp_path, HANDLER_MARKS)
    lines = _Lines(proc)
    events = []
    (tmp_path / "dumps").mkdir()

    def seen(event):
        events.append((time.monotonic(), event))
        if event.event == "watching":
            proc.stdin.write(f"fault {faults}\n")
            proc.stdin.flush()
        if on_event is not None:
            on_event(event, proc)

    try:
        results = dumplib.watch(info["pid"], dumplib.ExceptionRaised(["AccessViolation"], first_chance=True),
                                path=tmp_path / "dumps", kind="full", compress="zstd", snapshot=False, count=count,
                                interval=0, timeout=600, on_event=seen)
        lines.when("handled", nth=faults)
    finally:
        _stop(proc)
    return results, events, lines, info


def _raw(result, tmp_path):
    import zstandard

    with open(result.path, "rb") as f:
        return zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True).read()


def test_an_exception_that_comes_while_a_dump_is_finished_waits_for_it_and_is_dumped_too(tmp_path):
    """Two faults in a row: the second comes while the first dump is compressed (the target runs then);
    it is kept, not lost, and dumped once the first is done."""
    results, events, lines, info = _watch_faults(tmp_path, faults=2, count=2)
    kinds = [e.event for _, e in events]
    assert len(results) == 2, kinds
    assert kinds.count("fired") == 2 and "skipped" not in kinds, kinds
    first_dumped = next(at for at, e in events if e.event == "dumped")
    second_fired = [at for at, e in events if e.event == "fired"][1]
    assert first_dumped <= second_fired, kinds  # it waited for the first dump, not beside it
    before = info["before"].encode()
    assert bytes(reversed(before)) in _raw(results[1], tmp_path)  # the second dump is of the second fault


def _timed(monkeypatch, name, record):
    """backend.*name* (the real one) called as before, the moment it returns appended to *record*."""
    from dumplib._windows import backend

    real = getattr(backend, name)

    def timed(*args, **kwargs):
        try:
            return real(*args, **kwargs)
        finally:
            record.append(time.monotonic())

    monkeypatch.setattr(backend, name, timed)


def _ping_at_fired(event, proc):
    if event.event == "fired":
        proc.stdin.write("ping\n")
        proc.stdin.flush()


def test_an_exception_dump_holds_every_thread_through_the_write_and_lets_go_before_the_compression(
        tmp_path, monkeypatch):
    """Windows (and Wine) suspend every thread of a debuggee at a debug event until ContinueDebugEvent.
    The event is continued once MiniDumpWriteDump has returned, not after the read-back, compression
    and sidecar: another thread of the target, asked to answer as the exception fires, answers only once
    the writer has let the target go and before the watch reports "dumped"; the program's handler runs
    before "dumped" too; and the dump shows the process as it faulted (the handler's mark is not in it)."""
    released = []
    _timed(monkeypatch, "target_runs", released)
    results, events, lines, info = _watch_faults(tmp_path, faults=1, count=1, on_event=_ping_at_fired)
    assert len(results) == 1 and len(released) == 1, [e.to_dict() for _, e in events]
    dumped = next(at for at, e in events if e.event == "dumped")
    assert released[0] <= lines.when("pong") < dumped
    assert lines.when("handled") < dumped, "the target was held until the dump was compressed and placed"
    raw = _raw(results[0], tmp_path)
    before = info["before"].encode()
    assert before in raw and bytes(reversed(before)) not in raw, "the target ran before its memory was read"


def test_a_snapshot_dump_at_an_exception_lets_the_target_go_once_the_capture_is_taken(tmp_path, monkeypatch):
    """With a PSS snapshot the write reads the capture, not the process: the event is continued as soon
    as the capture is taken, so the target answers while MiniDumpWriteDump still writes."""
    from dumplib._windows import kernel32

    if kernel32.PssCaptureSnapshot is None:
        real_windows_only("Wine has no PssCaptureSnapshot (Windows 8.1 and later have)")
    released, written = [], []
    _timed(monkeypatch, "target_runs", released)
    _timed(monkeypatch, "write_dump", written)
    proc, info = _child(tmp_path, HANDLER_MARKS)
    lines = _Lines(proc)
    (tmp_path / "dumps").mkdir()

    def seen(event):
        if event.event == "watching":
            proc.stdin.write("fault 1\n")
            proc.stdin.flush()
        _ping_at_fired(event, proc)

    try:
        results = dumplib.watch(info["pid"], dumplib.ExceptionRaised(["AccessViolation"], first_chance=True),
                                path=tmp_path / "dumps", kind="full", snapshot=True, timeout=600, on_event=seen)
        pong = lines.when("pong")
    finally:
        _stop(proc)
    assert len(results) == 1 and results[0].snapshot and len(released) == 1 and len(written) == 1
    assert released[0] <= pong < written[0]


def test_a_step_failing_after_the_target_was_let_go_says_so(tmp_path, monkeypatch):
    """A failure in the compression, after the event was continued, must not read as if the process
    were still held: the error says it had been let go (and the handler did run)."""
    from dumplib._windows import backend, handover

    released = []

    def target_runs(pid):
        released.append(pid)
        handover.target_runs(pid)
        time.sleep(0.3)  # past the progress throttle (0.25 s): the compressor's first tick is passed on

    monkeypatch.setattr(backend, "target_runs", target_runs)

    def progress(*_args):
        if released:  # the compressor's first tick: the reader of the output "went away"
            raise dumplib.DumpFailed("the reader of the output went away", reason="broken-pipe")

    proc, info = _child(tmp_path, HANDLER_MARKS)
    lines = _Lines(proc)
    (tmp_path / "dumps").mkdir()

    def seen(event):
        if event.event == "watching":
            proc.stdin.write("fault 1\n")
            proc.stdin.flush()

    try:
        with pytest.raises(dumplib.DumpFailed) as caught:
            dumplib.watch(info["pid"], dumplib.ExceptionRaised(["AccessViolation"], first_chance=True),
                          path=tmp_path / "dumps", kind="mini", compress="zstd", snapshot=False, timeout=600,
                          on_event=seen, progress=progress)
        lines.when("handled")
    finally:
        _stop(proc)
    assert released == [info["pid"]]
    message = str(caught.value)
    assert message.startswith("the reader of the output went away")
    assert f"process {info['pid']} was no longer held when this failed" in message, message
    assert "exception passed on to its own handlers" in message, message
    assert list((tmp_path / "dumps").iterdir()) == []
