"""The Windows backend's promises, checked inside a Windows python.exe against real processes.

Runs on real Windows (the GitHub Actions workflow .github/workflows/windows.yml) and under Wine
(tests/e2e_wine/test_wine_dumps.py::test_unit_tests_pass_inside_windows_python). What only real
Windows can show is a skip whose reason starts with "real Windows only", never a pass.
"""
import contextlib
import ctypes
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

if sys.platform != "win32":
    pytest.skip("Windows backend: run inside Windows python.exe (real Windows, or Wine via the Wine tests)",
                allow_module_level=True)

import dumplib  # noqa: E402
from dumplib import ProcessNotFound  # noqa: E402
from dumplib._switch import current  # noqa: E402
from dumplib._windows import dbghelp, kernel32, wrappers  # noqa: E402
from dumplib._windows.access import DUMP_ACCESS, WALK_ACCESS  # noqa: E402
from dumplib._windows.backend import SAME_START_SECONDS  # noqa: E402
from dumplib._windows.writer import WriteMonitor  # noqa: E402
from dumplib._windows._common import ERROR_INVALID_PARAMETER, Win32Error  # noqa: E402
from dumplib._windows.ntdll import UNDER_WINE  # noqa: E402
from dumplib.formats.minidump import read_minidump  # noqa: E402
from dumplib.kinds import DumpKind  # noqa: E402
from dumplib._windows.masks import MiniDumpType, windows_mask  # noqa: E402
from dumplib.results import ProcessInfo  # noqa: E402

TARGET = Path(__file__).resolve().parents[1] / "winside" / "target.py"
SE_DEBUG = "SeDebugPrivilege"
SE_PRIVILEGE_ENABLED = 0x2
WINE_FLAGS = ("Wine 8's dbghelp ignores every MINIDUMP_TYPE flag but WithFullMemory, so it"
              " writes no handle, thread-info, memory-info or token stream and no private read/write pages")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def real_windows_only(reason: str) -> None:
    if UNDER_WINE:
        pytest.skip(f"real Windows only: {reason}")


@contextlib.contextmanager
def spawn(python: str = sys.executable, *args: str):
    """A Windows python.exe target holding a marker in a 1 MiB private block (tests/winside/target.py)."""
    proc = subprocess.Popen([python, str(TARGET), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        info = json.loads(line)
        info["proc"] = proc
        yield info
    finally:
        with contextlib.suppress(Exception):
            proc.stdin.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture()
def target():
    with spawn() as info:
        yield info


@pytest.fixture()
def debug_privilege_disabled():
    """SeDebugPrivilege disabled in this process's token (psutil enables it when imported)."""
    before = wrappers.privilege_attributes(SE_DEBUG)
    if before is None:
        pytest.skip("this account does not hold SeDebugPrivilege, so there is nothing to enable or restore")
    _set_debug_privilege(False)
    yield
    _set_debug_privilege(bool(before & SE_PRIVILEGE_ENABLED))


def _set_debug_privilege(enabled: bool) -> None:
    wrappers.set_privilege(SE_DEBUG, enabled)


def _debug_enabled() -> bool:
    return bool((wrappers.privilege_attributes(SE_DEBUG) or 0) & SE_PRIVILEGE_ENABLED)


@pytest.fixture()
def opens(monkeypatch):
    """Every OpenProcess dumplib makes, as (pid, access, SeDebugPrivilege enabled at that moment).

    The recorder calls the real OpenProcess; the privilege state is read from the token itself."""
    seen = []
    real = wrappers.open_process

    def recording(pid, access):
        seen.append((pid, access, _debug_enabled()))
        return real(pid, access)

    monkeypatch.setattr(wrappers, "open_process", recording)
    return seen


# -- least access and no lasting privilege ---------------------------------------------------------

VM_READ = kernel32.PROCESS_VM_READ


def test_ps_opens_for_the_memory_walk_only_and_never_enables_debug_privilege(target, opens, debug_privilege_disabled):
    rows = {p.pid: p for p in dumplib.processes()}
    assert rows[target["pid"]].full_dump_bytes, "ps walked no memory of the target"
    assert opens, "ps opened no process: the recorder is not on the path ps takes"
    assert {access for _, access, _ in opens} == {kernel32.PROCESS_QUERY_INFORMATION}
    assert not any(privileged for _, _, privileged in opens) and not _debug_enabled()


def test_estimate_asks_for_query_information_and_never_vm_read(target, opens, debug_privilege_disabled):
    est = dumplib.estimate(target["pid"], "full")
    assert est.bytes > 1 << 20
    assert [(pid, access) for pid, access, _ in opens] == [(target["pid"], kernel32.PROCESS_QUERY_INFORMATION)]
    assert not any(p for _, _, p in opens) and not _debug_enabled()


def test_the_dump_holds_debug_privilege_through_its_write_and_restores_it(
        target, opens, debug_privilege_disabled, tmp_path, monkeypatch):
    during = []
    real = dbghelp.MiniDumpWriteDump

    def recording(*args):
        during.append(_debug_enabled())
        return real(*args)

    monkeypatch.setattr(dbghelp, "MiniDumpWriteDump", recording)
    dumplib.create_dump(target["pid"], str(tmp_path), "mini", sidecar=False)
    assert during == [True], "MiniDumpWriteDump ran without SeDebugPrivilege (it opens every thread of the target)"
    assert not _debug_enabled(), "SeDebugPrivilege was left enabled after the dump"
    # The dump's own open (VM_READ) came last, privileged; before it only the walk's access was asked.
    reads = [i for i, (_, a, _) in enumerate(opens) if a & VM_READ]
    assert [opens[i][1:] for i in reads] == [(DUMP_ACCESS, True)], opens
    assert all(a == kernel32.PROCESS_QUERY_INFORMATION for _, a, _ in opens[:reads[0]]), opens


def test_privilege_enabled_restores_what_was_there_before(debug_privilege_disabled):
    with wrappers.privilege_enabled(SE_DEBUG) as held:
        assert held is True and _debug_enabled()
    assert not _debug_enabled()
    _set_debug_privilege(True)  # a caller that had it on keeps it on
    with wrappers.privilege_enabled(SE_DEBUG):
        assert _debug_enabled()
    assert _debug_enabled()


_TOKEN_PROBE = """
import ctypes
from ctypes import wintypes as wt
a = ctypes.WinDLL("advapi32", use_last_error=True)
k = ctypes.WinDLL("kernel32", use_last_error=True)
k.GetCurrentProcess.restype = wt.HANDLE
a.OpenProcessToken.argtypes = [wt.HANDLE, wt.DWORD, ctypes.POINTER(wt.HANDLE)]
token = wt.HANDLE()
a.OpenProcessToken(k.GetCurrentProcess(), 0x28, ctypes.byref(token))
luid = (ctypes.c_uint32 * 2)()
a.LookupPrivilegeValueW(None, "SeDebugPrivilege", ctypes.byref(luid))
def state():
    n = wt.DWORD()
    a.GetTokenInformation(token, 3, None, 0, ctypes.byref(n))
    buf = (ctypes.c_uint32 * (n.value // 4 + 1))()
    a.GetTokenInformation(token, 3, buf, n, ctypes.byref(n))
    for i in range(buf[0]):
        if (buf[1 + 3 * i], buf[2 + 3 * i]) == (luid[0], luid[1]):
            return bool(buf[3 + 3 * i] & 2)
def disable():
    privs = (ctypes.c_uint32 * 4)(1, luid[0], luid[1], 0)
    a.AdjustTokenPrivileges(token, False, privs, 0, None, None)
disable()  # a known start, whatever the parent's token held
before = state()
import psutil
print(before, state())
"""


def test_importing_dumplib_and_listing_processes_leaves_the_token_as_it_was():
    """psutil (which dumplib imports) enables SeDebugPrivilege when imported; dumplib puts it back."""
    probe = _TOKEN_PROBE.replace("import psutil\nprint(before, state())",
                                 "import dumplib\ndumplib.processes()\nimport psutil\nprint(before, state())")
    assert "import dumplib" in probe
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"], done.stdout


def test_importing_psutil_enables_debug_privilege_for_the_whole_process():
    """Why `import dumplib` cannot yet keep its promise to leave the token as it was: psutil's
    module init enables SeDebugPrivilege for the whole process and never restores it."""
    done = subprocess.run([sys.executable, "-c", _TOKEN_PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"], done.stdout


# -- one target from start to end -------------------------------------------------------------------

def test_a_pid_that_now_belongs_to_another_process_is_process_not_found(target, monkeypatch):
    handle = wrappers.open_process(target["pid"], kernel32.PROCESS_QUERY_LIMITED_INFORMATION)
    with wrappers.handle_closing(handle):
        started = wrappers.creation_time(handle)
    opened = _recording_opens(monkeypatch)
    # What the neutral code resolved: a process with this pid that started a minute earlier.
    stale = ProcessInfo(target["pid"], "python.exe", started=started - 60)
    with pytest.raises(ProcessNotFound, match="now belongs to another process"):
        current().open(stale)
    assert opened and [h for h in opened if _is_open(h)] == [], "the refused open kept its handle"
    fresh = ProcessInfo(target["pid"], "python.exe", started=started)
    with current().open(fresh) as session:
        assert _is_open(session.handle)


def test_creation_time_agrees_with_psutil(target):
    import psutil

    handle = wrappers.open_process(target["pid"], kernel32.PROCESS_QUERY_LIMITED_INFORMATION)
    with wrappers.handle_closing(handle):
        ours = wrappers.creation_time(handle)
    assert abs(ours - psutil.Process(target["pid"]).create_time()) < SAME_START_SECONDS
    assert abs(ours - time.time()) < 600


def _is_open(handle: int) -> bool:
    try:
        wrappers.exit_code(handle)
        return True
    except Win32Error as exc:
        assert exc.winerror == 6, exc  # ERROR_INVALID_HANDLE: the handle table has no such entry
        return False


def _recording_opens(monkeypatch):
    """Every process handle wrappers.open_process hands out from now on."""
    handles = []
    real = wrappers.open_process

    def recording(pid, access):
        handles.append(real(pid, access))
        return handles[-1]

    monkeypatch.setattr(wrappers, "open_process", recording)
    return handles


def test_the_sessions_handle_is_closed_when_the_pipeline_ends(monkeypatch, target, tmp_path):
    handles = _recording_opens(monkeypatch)
    proc = dumplib.resolve_target(target["pid"])
    session = current().open(proc)
    kept = session.handle
    assert _is_open(kept)
    session.close()
    assert not _is_open(kept), "the closed session's handle is still open"
    handles.clear()
    dumplib.create_dump(target["pid"], str(tmp_path), "triage", sidecar=False)
    assert handles, "the dump opened no process handle"
    assert [h for h in handles if _is_open(h)] == [], "a process handle outlived the dump"


def test_two_sessions_on_one_process_keep_their_own_handles(target, tmp_path):
    """The one that closes first leaves the other's handle open, and the other still dumps through it."""
    platform = current()
    proc = dumplib.resolve_target(target["pid"])
    with platform.open(proc, for_dump=True) as first:
        with platform.open(proc, for_dump=True) as second:
            assert first.handle != second.handle
            theirs = second.handle
        assert _is_open(first.handle) and not _is_open(theirs)
        plan = first.plan(DumpKind.TRIAGE, None)
        from dumplib._platform import WriteOptions

        path = str(tmp_path / "first.dmp")
        report = first.write(plan, path, WriteOptions(comment=None, signature="{}"))
        first.verify(path, plan, report)
    assert read_minidump(path).pid == target["pid"]


# -- the write ---------------------------------------------------------------------------------------

def test_stopped_seconds_is_the_time_inside_minidumpwritedump(target, tmp_path):
    result = dumplib.create_dump(target["pid"], str(tmp_path), "triage", sidecar=False)
    assert result.stopped_seconds is not None
    assert 0 < result.stopped_seconds <= result.seconds


def test_a_dump_whose_target_exits_right_after_the_write_is_kept(monkeypatch, target, tmp_path):
    real = dbghelp.MiniDumpWriteDump

    def write_then_target_exits(*args):
        ok = real(*args)
        target["proc"].kill()
        target["proc"].wait(timeout=20)
        return ok

    monkeypatch.setattr(dbghelp, "MiniDumpWriteDump", write_then_target_exits)
    result = dumplib.create_dump(target["pid"], str(tmp_path), "mini", sidecar=False)
    assert target["proc"].returncode is not None
    assert any("exited" in w and "kept" in w for w in result.warnings), result.warnings
    dump = read_minidump(result.path)
    assert dump.complete and dump.pid == target["pid"] and dump.threads and dump.modules


def test_a_flag_the_dbghelp_rejects_is_dropped_and_the_mask_used_is_what_is_recorded(monkeypatch, target, tmp_path):
    real = dbghelp.MiniDumpWriteDump
    newer = int(MiniDumpType.WithAvxXStateContext)

    def old_dbghelp(process, pid, file, mask, *rest):
        if mask & newer:  # what a Windows 7 dbghelp says to a flag it does not know
            raise Win32Error("MiniDumpWriteDump", 0x80070000 | ERROR_INVALID_PARAMETER)
        return real(process, pid, file, mask, *rest)

    monkeypatch.setattr(dbghelp, "MiniDumpWriteDump", old_dbghelp)
    asked = windows_mask(DumpKind.MINI) | newer
    result = dumplib.create_dump(target["pid"], str(tmp_path), flags=asked, comment="c")
    used = asked & ~newer
    assert result.flags == used
    assert any("0x200000" in w and "dropped" in w for w in result.warnings), result.warnings
    dump = read_minidump(result.path)
    assert dump.flags == used  # the header dbghelp wrote
    signature = json.loads(dump.comment.splitlines()[-1])
    assert signature["flags"] == used
    side = json.loads(Path(result.path + ".json").read_text())
    assert side["flags"] == used


def test_interrupt_during_the_write_leaves_no_file(target, tmp_path):
    import _thread

    started = threading.Event()

    def interrupt_when_writing():
        # dbghelp has written bytes: MiniDumpWriteDump is running.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                p.name.startswith(".dumplib-") and p.stat().st_size for p in tmp_path.iterdir()):
            time.sleep(0.002)
        started.set()
        _thread.interrupt_main()

    threading.Thread(target=interrupt_when_writing, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        dumplib.create_dump(target["pid"], str(tmp_path), "full", sidecar=False)
    assert started.is_set()
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_inside_a_dbghelp_callback_is_not_lost(target, tmp_path):
    """Python runs a pending signal handler inside whatever Python code runs next in the main
    thread: during MiniDumpWriteDump, a dbghelp callback. Raised there, the KeyboardInterrupt would
    be swallowed by ctypes ("Exception ignored on calling ctypes callback function") and the dump
    kept; it must stop the dump instead. Wine calls Module and Thread callbacks, so this runs there."""
    import _thread

    real = WriteMonitor.on_callback
    sent = []

    def interrupting(self, param, callback_input, callback_output):
        if not sent:
            sent.append(callback_input.contents.CallbackType)
            _thread.interrupt_main()
        return real(self, param, callback_input, callback_output)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(WriteMonitor, "on_callback", interrupting)
        with pytest.raises(KeyboardInterrupt):
            dumplib.create_dump(target["pid"], str(tmp_path), "mini", sidecar=False)
    assert sent, "dbghelp called no callback"
    assert list(tmp_path.iterdir()) == []


def test_sigterm_during_the_write_exits_143_through_the_cli_and_leaves_nothing(target, tmp_path):
    import signal

    from dumplib_cli._common import run

    def terminate_when_writing():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                p.name.startswith(".dumplib-") and p.stat().st_size for p in tmp_path.iterdir()):
            time.sleep(0.002)
        signal.raise_signal(signal.SIGTERM)  # the C handler trips; Python runs it in the main thread

    threading.Thread(target=terminate_when_writing, daemon=True).start()
    with pytest.raises(SystemExit) as info:
        run(lambda: dumplib.create_dump(target["pid"], str(tmp_path), "mini", sidecar=False),
            as_json=False, debug=False)
    assert info.value.code == 143
    assert list(tmp_path.iterdir()) == []


def test_cancel_callback_stops_the_write_early(target, tmp_path):
    real_windows_only("Wine's dbghelp never calls CancelCallback, so under Wine the write runs to its end"
                      " and is discarded afterwards (test_interrupt_during_the_write_leaves_no_file)")
    began = time.monotonic()
    dumplib.create_dump(target["pid"], str(tmp_path / "whole.dmp"), "full", sidecar=False)
    whole = time.monotonic() - began
    (tmp_path / "whole.dmp").unlink()
    calls = []
    real = WriteMonitor.on_callback

    def counting(self, param, callback_input, callback_output):
        calls.append(callback_input.contents.CallbackType)
        if callback_input.contents.CallbackType == dbghelp.CancelCallback and len(calls) > 1:
            import _thread
            _thread.interrupt_main()
        return real(self, param, callback_input, callback_output)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(WriteMonitor, "on_callback", counting)
        began = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            dumplib.create_dump(target["pid"], str(tmp_path), "full", sidecar=False)
    assert dbghelp.CancelCallback in calls, "dbghelp never asked CancelCallback"
    assert list(tmp_path.iterdir()) == []
    assert time.monotonic() - began < whole, "the cancelled write took as long as a whole one"


# -- what the masks promise ---------------------------------------------------------------------------

def test_streams_the_mask_asks_for_are_checked(target, tmp_path):
    result = dumplib.create_dump(target["pid"], str(tmp_path), "mini", sidecar=False)
    if UNDER_WINE:
        assert any("Wine" in w and "WithHandleData" in w for w in result.warnings), result.warnings
        return
    dump = read_minidump(result.path)
    for stream in (12, 16, 17, 19):  # handles, memory info, thread info, token
        assert dump.has_stream(stream), (stream, dump.stream_names())
    assert not any("Wine" in w for w in result.warnings)


def test_miniplus_holds_the_private_heap_and_mini_does_not(target, tmp_path):
    real_windows_only(WINE_FLAGS)
    plus = dumplib.create_dump(target["pid"], str(tmp_path), "miniplus", sidecar=False)
    mini = dumplib.create_dump(target["pid"], str(tmp_path), "mini", sidecar=False)
    marker = target["marker"].encode()
    assert read_minidump(plus.path).read_memory(target["address"], len(marker)) == marker
    assert marker not in Path(mini.path).read_bytes()
    independent = _independent_parser(plus.path)
    if independent is not None:
        assert independent.get_reader().read(target["address"], len(marker)) == marker


def _independent_parser(path):
    try:
        from minidump.minidumpfile import MinidumpFile
    except ImportError:
        if IN_CI:
            pytest.fail("CI=true but the PyPI `minidump` parser is not installed")
        return None
    return MinidumpFile.parse(path)


# -- bitness against real processes --------------------------------------------------------------------

def _other_python(bits: int) -> str:
    path = os.environ.get(f"DUMPLIB_TEST_PYTHON{bits}", "")
    if not path:
        if IN_CI:
            pytest.fail(f"CI=true but DUMPLIB_TEST_PYTHON{bits} does not name a {bits}-bit python.exe")
        pytest.skip(f"NOT RUN: set DUMPLIB_TEST_PYTHON{bits} to a {bits}-bit python.exe")
    return path


def test_a_64_bit_dumper_writes_a_32_bit_target_with_the_wow64_warning(tmp_path):
    real_windows_only("this Wine rig runs 64-bit Wine without wine32, so no 32-bit process exists to dump")
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        pytest.skip("needs a 64-bit interpreter (the x86 job runs the refusal instead)")
    with spawn(_other_python(32)) as t32:
        result = dumplib.create_dump(t32["pid"], str(tmp_path), "full", sidecar=False)
        assert any(".load wow64exts" in w for w in result.warnings), result.warnings
        dump = read_minidump(result.path)
        assert dump.complete and dump.pid == t32["pid"]
        assert dump.read_memory(t32["address"], len(t32["marker"])) == t32["marker"].encode()


def test_a_launched_32_bit_program_is_not_dumped_at_its_loader_breakpoints(tmp_path):
    """A 64-bit debugger that creates a WOW64 process is shown two start-up breakpoints (native
    ntdll's STATUS_BREAKPOINT, then WOW64's STATUS_WX86_BREAKPOINT); neither is the program's."""
    real_windows_only("this Wine rig runs 64-bit Wine without wine32, so no 32-bit program can be launched")
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        pytest.skip("needs a 64-bit interpreter (only a 64-bit debugger is shown WOW64's breakpoint)")
    events = []
    results = dumplib.watch(triggers=dumplib.ExceptionRaised(["Breakpoint", 0x4000001F]),
                            launch=[_other_python(32), "-c", "pass"], path=str(tmp_path), timeout=60,
                            on_event=events.append)
    assert results == [], [e.to_dict() for e in events]
    assert not list(tmp_path.glob("*.dmp"))


def test_a_32_bit_dumper_refuses_a_64_bit_target(tmp_path):
    real_windows_only("this Wine rig runs 64-bit Wine without wine32, so there is no 32-bit Python to dump with")
    if ctypes.sizeof(ctypes.c_void_p) != 4:
        pytest.skip("needs a 32-bit interpreter (the x64 jobs run the WOW64 dump instead)")
    with spawn(_other_python(64)) as t64:
        with pytest.raises(dumplib.BitnessMismatch, match="x64 Python"):
            dumplib.create_dump(t64["pid"], str(tmp_path), "mini", sidecar=False)
    assert list(tmp_path.iterdir()) == []


# -- files dumplib creates -------------------------------------------------------------------------------

def _aces(sddl: str):
    dacl = sddl.split("D:", 1)[1]
    flags = dacl.split("(", 1)[0]
    return flags, set(re.findall(r"\(([^)]*)\)", dacl))


def test_every_file_dumplib_creates_reads_back_owner_only(target, tmp_path):
    real_windows_only("Wine 8 keeps no security descriptor for files: GetNamedSecurityInfoW returns one made up"
                      " from the Unix mode (D:(A;;FA;;;SY)(A;;FA;;;user)), whatever CreateFileW was given")
    result = dumplib.create_dump(target["pid"], str(tmp_path), "mini", compress="gzip")
    sid = wrappers.current_user_sid()
    for path in (result.path, result.path + ".json"):
        sddl = wrappers.file_security(path)
        flags, aces = _aces(sddl)
        assert "P" in flags, (path, flags)  # protected: nothing inherited from the directory
        assert aces == {f"A;;FA;;;{sid}", "A;;FA;;;SY", "A;;FA;;;BA"}, (path, aces)
        assert sddl.startswith(f"O:{sid}"), sddl  # this user's own, even when elevated (default owner: BA)


def test_create_new_file_never_opens_an_existing_name_or_a_symlink(tmp_path):
    existing = tmp_path / "x.bin"
    existing.write_bytes(b"precious")
    with pytest.raises(Win32Error) as info:
        wrappers.create_new_file(str(existing))
    assert info.value.winerror == 80  # ERROR_FILE_EXISTS
    assert existing.read_bytes() == b"precious"
    victim = tmp_path / "victim"
    victim.write_bytes(b"untouched")
    link = tmp_path / "link.bin"
    try:
        os.symlink(victim, link)
    except OSError as exc:
        pytest.skip(f"NOT RUN: cannot create a symlink here ({exc})")
    if not os.path.lexists(link):
        real_windows_only("Wine's CreateSymbolicLinkW reports success and creates nothing (the Wine tests plant"
                          " symlinks from the Linux side instead)")
    with pytest.raises(Win32Error):
        wrappers.create_new_file(str(link))
    assert victim.read_bytes() == b"untouched"


def test_scratch_volume_must_keep_acls_and_be_creatable(tmp_path):
    host = current().host()
    assert host.scratch_usable(str(tmp_path)) is True
    assert list(tmp_path.iterdir()) == []  # the probe file is gone
    assert host.scratch_usable(str(tmp_path / "missing")) is False


def test_without_directory_locks_only_day_old_temporaries_are_taken_for_dead(tmp_path):
    """Windows has no flock to prove no live dumplib writes beside us: a temporary goes only once a day old."""
    from dumplib.placement import writing_in

    fresh = tmp_path / ".dumplib-00000000000000aa.tmp"
    old = tmp_path / ".dumplib-00000000000000bb.tmp"
    fresh.write_bytes(b"a live dumplib's")
    old.write_bytes(b"a killed dumplib's")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    with writing_in([str(tmp_path)], current().host()) as told:
        pass
    assert fresh.exists() and not old.exists()
    assert told == [f"removed a stale temporary file of a killed dumplib: {old.name}"]


def test_stdout_redirected_to_a_file_takes_the_dump_and_says_it_cannot_judge_who_reads_it(target, tmp_path):
    """stat has no owner and a made-up mode here (0o666 for every writable file): the file is not refused for
    them, its volume's free space is found through its handle, and the caller is told what dumplib cannot check."""
    out = tmp_path / "redirected.dmp"
    with open(out, "wb") as f:
        done = subprocess.run([sys.executable, "-m", "dumplib_cli", "dump", str(target["pid"]), "-", "-k", "mini"],
                              stdout=f, stderr=subprocess.PIPE, text=True, timeout=300,
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert done.returncode == 0, done.stderr
    assert "keeps the permissions it was created with" in done.stderr
    dump = read_minidump(str(out))
    assert dump.pid == target["pid"] and dump.threads


_TEXT_MODE_STDOUT = """
import msvcrt, os, sys
import dumplib
msvcrt.setmode(1, os.O_TEXT)  # a host that left fd 1 in text mode (CPython itself starts it binary)
dumplib.create_dump(int(sys.argv[1]), "-", "mini", compress="gzip", min_free=0)
"""


def test_a_dump_sent_down_a_text_mode_stdout_arrives_byte_for_byte(target):
    """In text mode every 0x0A byte written to fd 1 would go out as 0x0D 0x0A and the gzip stream would be
    corrupt: '-' puts stdout in binary mode first."""
    import gzip

    done = subprocess.run([sys.executable, "-c", _TEXT_MODE_STDOUT, str(target["pid"])], capture_output=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert b"\n" in done.stdout  # a stream with newline bytes, so text mode would have changed it
    assert gzip.decompress(done.stdout)[:4] == b"MDMP"


# -- docs/api.md's Windows notes say what the code does ----------------------------------------------

def _notes() -> str:
    text = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text(encoding="utf-8")
    return text.split("- Windows: dbghelp", 1)[1].split("\n- Linux:", 1)[0]


def _mask(expr: str) -> int:
    value = 0
    for name in expr.split("|"):
        value |= getattr(kernel32, name.strip())
    return value


def test_api_md_windows_notes_name_the_access_each_operation_asks_for():
    notes = " ".join(_notes().split())
    walk = re.search(r"`estimate` opens the target with `([A-Z_| ]+)`", notes)
    ps = re.search(r"`dumplib ps` .*? opens each with `([A-Z_| ]+)`", notes)
    dump = re.search(r"Only the dump's own `OpenProcess`, in the write, asks for `([A-Z_| ]+)`", notes)
    assert walk and ps and dump, notes
    assert _mask(walk.group(1)) == WALK_ACCESS == kernel32.PROCESS_QUERY_INFORMATION
    assert _mask(ps.group(1)) == WALK_ACCESS
    assert _mask(dump.group(1)) == DUMP_ACCESS
    assert "SeDebugPrivilege** is enabled for the whole of what needs it" in notes
    assert "`MiniDumpWriteDump` (it opens every thread of the target" in notes
    assert "until the free-space guard has passed" in notes
    assert "`stopped_seconds` is the time spent in `MiniDumpWriteDump`" in notes
    assert '`reason="disk-full"`' in notes and "a warning naming Wine" in notes
