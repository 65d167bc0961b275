"""Never a suspended target: every dump being written, on any thread, is cancelled through its
CancelCallback and waited for before dumplib lets go (a watch stopping, a console closing), and
max_pause is enforced on Windows through the same callback.

Run on every OS against a recording fake of Win32 (tests/winfake.py) whose MiniDumpWriteDump
behaves as Windows documents (asks CancelCallback as it goes, fails with ERROR_CANCELLED when told)
or as Wine's does (never asks). Real Windows proves the suspend counts in the workflow
(test_windows_watch.py::test_an_interrupted_full_exception_dump_leaves_every_thread_running).
"""
import ctypes
import threading
import time

import pytest

from dumplib.errors import DumpFailed
from dumplib.kinds import DumpKind
from dumplib.triggers import ExceptionRaised
from winfake import PID, dump, fake_windows, plan_for, win  # noqa: F401 - win is the fixture

ERROR_CANCELLED = 1223
#: A fake write never runs longer than this, whatever happens (a broken cancel fails the test, not CI).
LONGEST = 20.0


class Writer:
    """A MiniDumpWriteDump that takes a while: like Windows (asks CancelCallback every 10 ms and
    stops when told) or like Wine (*asks* False: runs its *seconds* out)."""

    def __init__(self, win, asks=True, seconds=LONGEST):
        self.win, self.asks, self.seconds = win, asks, seconds
        self.started, self.ended = threading.Event(), threading.Event()
        self.cancelled = False

    def __call__(self, process, pid, file, mask, exc, streams, callback):
        dbghelp = self.win.dbghelp
        info = callback._obj
        routine = ctypes.cast(info.CallbackRoutine, dbghelp.MINIDUMP_CALLBACK_ROUTINE)
        self.started.set()
        try:
            until = time.monotonic() + self.seconds
            while time.monotonic() < until:
                if self.asks:
                    given = dbghelp.MINIDUMP_CALLBACK_INPUT(CallbackType=dbghelp.CancelCallback)
                    out = dbghelp.MINIDUMP_CALLBACK_OUTPUT_CANCEL()
                    routine(None, ctypes.pointer(given), ctypes.pointer(out))
                    if out.Cancel:
                        self.cancelled = True
                        return self.win.fake.fail(0x80070000 | ERROR_CANCELLED)
                time.sleep(0.01)
            return 1
        finally:
            self.ended.set()


def _dump(win, **options):
    """A full dump (the kind that takes long enough to be cancelled) through a session."""
    return dump(win, plan_for(kind=DumpKind.FULL), **options)


def _in_thread(fn):
    out = {}

    def run():
        try:
            out["result"] = fn()
        except BaseException as exc:  # noqa: B036 - the test looks at it
            out["error"] = exc
    t = threading.Thread(target=run, name="writer", daemon=True)
    t.start()
    return t, out


# -- a cancel from any thread ----------------------------------------------------------------------

def test_a_cancel_from_another_thread_stops_the_write_and_the_wait_ends_with_it(win):
    writer = Writer(win)
    win.fake.impls["MiniDumpWriteDump"] = writer
    t, out = _in_thread(lambda: _dump(win))
    assert writer.started.wait(LONGEST)
    why = DumpFailed("stopping", reason="cancelled")
    assert win.inflight.WRITES.cancel(why) == 1
    assert win.inflight.WRITES.wait(LONGEST), "the write never returned"
    assert writer.ended.is_set() and writer.cancelled
    t.join(LONGEST)
    assert out.get("error") is why
    assert not win.inflight.WRITES.busy()


def test_a_cancel_under_wine_waits_for_the_whole_write_and_still_drops_it(win):
    writer = Writer(win, asks=False, seconds=0.5)
    win.fake.impls["MiniDumpWriteDump"] = writer
    t, out = _in_thread(lambda: _dump(win))
    assert writer.started.wait(LONGEST)
    win.inflight.WRITES.cancel(DumpFailed("stopping", reason="cancelled"))
    assert win.inflight.WRITES.wait(LONGEST)
    assert writer.ended.is_set(), "the wait ended before MiniDumpWriteDump returned"
    t.join(LONGEST)
    assert isinstance(out.get("error"), DumpFailed) and out["error"].reason == "cancelled"


# -- max_pause ---------------------------------------------------------------------------------------

def test_max_pause_cancels_a_write_that_keeps_the_target_suspended_too_long(win):
    writer = Writer(win)
    win.fake.impls["MiniDumpWriteDump"] = writer
    with pytest.raises(DumpFailed) as caught:
        _dump(win, max_pause=0.05)
    assert caught.value.reason == "max-pause" and writer.cancelled
    assert "--max-pause" in str(caught.value)


def test_without_max_pause_nothing_cancels_the_write(win):
    writer = Writer(win, seconds=0.3)
    win.fake.impls["MiniDumpWriteDump"] = writer
    _dump(win, max_pause=None)
    assert not writer.cancelled


# -- the watcher's debugger thread -----------------------------------------------------------------

def _exception_event(win):
    """A WaitForDebugEvent that reports the attach breakpoint, then one access violation, then nothing."""
    dbg = win.debugapi
    queue = [dbg.EXCEPTION_BREAKPOINT, 0xC0000005]

    def wait(event_ref, ms):
        if not queue:
            time.sleep(ms / 1000)
            return win.fake.fail(121)
        event = event_ref._obj
        event.dwDebugEventCode = dbg.EXCEPTION_DEBUG_EVENT
        event.dwProcessId, event.dwThreadId = PID, 7
        event.u.Exception.ExceptionRecord.ExceptionCode = queue.pop(0)
        event.u.Exception.dwFirstChance = 1
        return 1
    return wait


@pytest.mark.parametrize("asks", [True, False], ids=["windows", "wine"])
def test_stopping_the_watch_cancels_the_debugger_threads_write_and_returns_only_after_it(win, monkeypatch, asks):
    # The detach's own patience is shorter than the write: it must count from the write's end.
    monkeypatch.setattr(win.debugloop, "PATIENCE", 0.5)
    writer = Writer(win, asks=asks, seconds=LONGEST if asks else 1.0)
    win.fake.impls["MiniDumpWriteDump"] = writer
    win.fake.impls["WaitForDebugEvent"] = _exception_event(win)
    win.fake.impls["GetThreadContext"] = lambda *a: 1
    outcome = {}

    def fire(pid, firing, hand_over):
        try:
            outcome["result"] = hand_over(lambda: _dump(win, event=firing.event))
        except DumpFailed as exc:
            outcome["error"] = exc

    after_write = threading.Event()
    real_dump = _dump

    def dump_then_clean_up(*args, **kwargs):
        try:
            return real_dump(*args, **kwargs)
        finally:
            time.sleep(0.2)  # what follows the write on the debugger thread: removing the temporary
            after_write.set()

    loop = win.debugloop.DebugLoop(PID, [ExceptionRaised()], lambda pid, firing, hand_over: fire(
        pid, firing, lambda take: hand_over(lambda: dump_then_clean_up(win, event=firing.event))))
    loop.start()
    assert writer.started.wait(LONGEST)
    loop.stop()
    assert writer.ended.is_set(), "stop() returned while MiniDumpWriteDump was still running"
    assert after_write.is_set(), "stop() returned before the debugger thread had cleaned up after its write"
    assert writer.cancelled is asks
    assert outcome["error"].reason == "cancelled"
    assert [c.name for c in win.fake.calls if c.name == "DebugActiveProcessStop"], "never detached"


# -- a closed console, logoff, shutdown ------------------------------------------------------------

def _console_handler(win):
    (call,) = win.fake.named("SetConsoleCtrlHandler")
    return call.args[0]


@pytest.mark.parametrize("event", [2, 5, 6], ids=["close", "logoff", "shutdown"])
def test_a_console_close_logoff_or_shutdown_cancels_and_waits_for_the_write(win, event):
    writer = Writer(win)
    win.fake.impls["MiniDumpWriteDump"] = writer
    win.fake.impls["ProcessIdToSessionId"] = lambda pid, session: (setattr(session._obj, "value", 1), 1)[1]
    t, out = _in_thread(lambda: _dump(win))
    assert writer.started.wait(LONGEST)
    handler = _console_handler(win)
    assert handler(event) == 0  # passed on: Windows ends the process as it would have
    assert writer.ended.is_set() and writer.cancelled, "the handler returned while the write ran on"
    t.join(LONGEST)
    assert out["error"].reason == "cancelled"


def test_ctrl_c_and_a_services_logoff_leave_the_write_alone(win):
    writer = Writer(win, seconds=0.5)
    win.fake.impls["MiniDumpWriteDump"] = writer
    win.fake.impls["ProcessIdToSessionId"] = lambda pid, session: (setattr(session._obj, "value", 0), 1)[1]
    t, out = _in_thread(lambda: _dump(win))
    assert writer.started.wait(LONGEST)
    handler = _console_handler(win)
    assert handler(0) == 0 and handler(5) == 0  # CTRL_C (Python's own SIGINT) and a user's logoff in session 0
    t.join(LONGEST)
    assert not writer.cancelled and "error" not in out, out


# -- the exception's CONTEXT, per machine -----------------------------------------------------------

#: winnt.h, as Microsoft documents each CONTEXT: (size, ContextFlags offset, CONTEXT_ALL, PC offset).
WINNT = {
    0x8664: (1232, 0x30, 0x0010001F, 0xF8),   # x64: P1Home..P6Home first; Rip after R15
    0x014C: (716, 0x0, 0x0001003F, 0xB8),     # x86: Eip after Ebp; 512 bytes of ExtendedRegisters last
    0xAA64: (912, 0x0, 0x0040001F, 0x108),    # ARM64: X0..X28, Fp, Lr, Sp, then Pc
}


@pytest.mark.parametrize("machine", sorted(WINNT))
def test_the_exception_context_is_the_dumpers_own_machines(win, machine):
    size, flags_at, all_flags, pc_at = WINNT[machine]
    layout = win.policy.CONTEXT_LAYOUTS[machine]
    assert (layout.size, layout.flags_offset, layout.all_flags, layout.ip_offset) == (size, flags_at, all_flags, pc_at)
    seen = {}

    def get_context(thread, context):
        seen["flags"] = ctypes.c_uint32.from_address(context.value + flags_at).value
        seen["aligned"] = context.value % layout.align == 0
        ctypes.c_uint32.from_address(context.value + pc_at).value = 0x1234  # the faulting thread's pc
        return 1

    win.fake.impls["GetThreadContext"] = get_context
    record = win.debugapi.EXCEPTION_RECORD(ExceptionCode=0xC0000005, ExceptionAddress=0x1234)
    param = win.exception_info.ExceptionParam(record, 7, machine)
    assert seen == {"flags": all_flags, "aligned": True}, seen
    assert ctypes.c_uint32.from_address(param.context_address + pc_at).value == 0x1234
    assert param.pointers.ContextRecord == param.context_address


def test_a_dump_at_an_exception_hands_its_exception_information_to_minidumpwritedump(win):
    """The event's record and context reach the write (ExceptionParam), so the dump has an exception
    stream; an ordinary dump passes none."""
    from dumplib._platform import TargetEvent

    record = win.debugapi.EXCEPTION_RECORD(ExceptionCode=0xC0000005, ExceptionAddress=0x1234)
    param = win.exception_info.ExceptionParam(record, 7)
    dump(win, event=TargetEvent("exception", tid=7, code=0xC0000005, address=0x1234, raw=param))
    dump(win)
    given, ordinary = [c.args[4] for c in win.fake.named("MiniDumpWriteDump")]
    assert given is not None and given._obj.ThreadId == 7, "the exception dump was written without its exception"
    assert given._obj.ExceptionPointers.contents.ExceptionRecord.contents.ExceptionCode == 0xC0000005
    assert ordinary is None


# -- the exit dump -----------------------------------------------------------------------------------

@pytest.mark.parametrize("code, reason", [(112, "disk-full"), (299, None)], ids=["disk-full", "partial-copy"])
def test_an_exit_dump_reads_the_debuggers_handle_and_a_failure_is_reported_as_what_it_was(win, code, reason):
    from dumplib._platform import TargetEvent

    debugger_handle = 0x7770
    win.fake.impls["GetExitCodeProcess"] = lambda h, out: (setattr(out._obj, "value", 3), 1)[1]  # it is ending
    win.fake.impls["MiniDumpWriteDump"] = lambda *a: win.fake.fail(0x80070000 | code)
    event = TargetEvent("exit", tid=7, code=3, held=debugger_handle)
    with pytest.raises(DumpFailed) as caught:
        _dump(win, event=event)
    assert caught.value.reason == reason and caught.value.winerror == code, caught.value
    assert "exited while" not in str(caught.value)
    assert {c.args[0] for c in win.fake.named("MiniDumpWriteDump")} == {debugger_handle}
    assert not [c for c in win.fake.named("OpenProcess") if c.args[0] & 0x0010], "the exit dump reopened by pid"


# -- free space is what this user may write ----------------------------------------------------------

def test_free_space_is_what_the_caller_may_use_under_its_quota(win):
    def space(path, caller, total, free):
        caller._obj.value, total._obj.value, free._obj.value = 10 << 20, 100 << 30, 50 << 30
        return 1

    win.fake.impls["GetDiskFreeSpaceExW"] = space
    assert win.host.WindowsHost().usage("C:\\dumps") == (100 << 30, 10 << 20)


@pytest.mark.parametrize("code", [112, 39, 1295], ids=["disk-full", "handle-disk-full", "quota-exceeded"])
def test_a_create_refused_for_want_of_space_or_quota_is_disk_full(win, monkeypatch, code):
    import contextlib

    monkeypatch.setattr(win.wrappers, "owner_only_security",
                        lambda owner=True: contextlib.nullcontext(win.kernel32.SECURITY_ATTRIBUTES()))
    win.fake.impls["CreateFileW"] = lambda *a: win.fake.fail(code) or (1 << 64) - 1  # INVALID_HANDLE_VALUE
    with pytest.raises(DumpFailed) as caught:
        win.create_new_file("C:\\dumps\\x.tmp")
    assert caught.value.reason == "disk-full" and caught.value.winerror == code
    assert type(caught.value).__name__ == "DumpFailed"  # not InvalidDumpPath


def test_a_create_whose_owner_cannot_be_named_is_made_again_with_the_default_owner_once(win, monkeypatch):
    """ERROR_INVALID_OWNER (a share whose server does not know this account; only such a share on real
    Windows can return it): the same private DACL without the owner, tried once; any other refusal is not."""
    import contextlib

    asked = []
    monkeypatch.setattr(win.wrappers, "owner_only_security",
                        lambda owner=True: asked.append(owner) or contextlib.nullcontext(win.kernel32.SECURITY_ATTRIBUTES()))
    tries = iter([1307, None])

    def create(*a):  # type: ignore[no-untyped-def]
        code = next(tries)
        return win.fake.fail(code) or (1 << 64) - 1 if code else 0x44

    win.fake.impls["CreateFileW"] = create
    assert win.create_new_file("C:\\dumps\\x.tmp") == 0x44
    assert asked == [True, False]
    asked.clear()
    win.fake.impls["CreateFileW"] = lambda *a: win.fake.fail(1307) or (1 << 64) - 1
    with pytest.raises(Exception):
        win.create_new_file("C:\\dumps\\y.tmp")
    assert asked == [True, False]  # not a third time


# -- --launch: under the debugger from the first instruction --------------------------------------

def test_a_launched_command_is_created_as_the_debug_threads_debuggee_and_held_until_configured(win, monkeypatch):
    created = {}

    class Popen:
        pid = 555

        def __init__(self, argv, creationflags=0):
            created.update(argv=argv, flags=creationflags, thread=threading.current_thread().name)

    monkeypatch.setattr(win.debugloop.subprocess, "Popen", Popen)
    events = win.debugloop.WindowsEvents()
    proc = events.launch_held(["app.exe"])
    assert proc.pid == 555 and created["flags"] & win.debugloop.DEBUG_ONLY_THIS_PROCESS
    time.sleep(0.3)
    assert not win.fake.named("WaitForDebugEvent"), "events were taken (and continued) before the watcher configured"
    loop = events.source(555, [ExceptionRaised()], lambda *a: None)
    loop.start()
    try:
        for _ in range(200):
            if win.fake.named("WaitForDebugEvent"):
                break
            time.sleep(0.01)
        waits = {c.thread for c in win.fake.named("WaitForDebugEvent")}
        assert waits == {created["thread"]}, (waits, created)  # the creating thread is the debugger
        assert not win.fake.named("DebugActiveProcess")
    finally:
        loop.stop()


# -- svc:NAME ------------------------------------------------------------------------------------------

def _scm(win, state=4, pid=1234, missing=False):
    def open_service(manager, name, access):
        return win.fake.fail(1060) if missing else win.fake.handle("service")

    def query(service, level, status, size, needed):
        status._obj.dwCurrentState, status._obj.dwProcessId = state, pid
        return 1

    win.fake.impls.update(OpenSCManagerW=lambda *a: win.fake.handle("scm"), OpenServiceW=open_service,
                          QueryServiceStatusEx=query)


def test_a_service_name_is_its_process_from_the_service_control_manager(win):
    _scm(win)
    assert win.wrappers.service_pid("W3SVC") == 1234
    assert [c.args[1] for c in win.fake.named("OpenServiceW")] == ["W3SVC"]
    assert len(win.fake.named("CloseServiceHandle")) == 2  # the service's handle and the manager's


@pytest.mark.parametrize("case, words", [("stopped", "is not running"), ("missing", "no service is named")])
def test_a_stopped_or_unknown_service_is_process_not_found_saying_which(win, case, words):
    from dumplib.errors import ProcessNotFound

    _scm(win, state=1, pid=0, missing=case == "missing")
    with pytest.raises(ProcessNotFound) as caught:
        win.wrappers.service_pid("W3SVC")
    assert words in str(caught.value) and caught.value.target == "svc:W3SVC"
    assert len(win.fake.named("CloseServiceHandle")) == (2 if case == "stopped" else 1)


def test_svc_targets_go_to_the_platforms_service_lookup():
    from dumplib._platform import Platform
    from dumplib.errors import ProcessNotFound
    from dumplib.targets import resolve_target

    class NoServices:
        service_pid = Platform.service_pid  # the interface's answer where the OS has no services

    with pytest.raises(ProcessNotFound) as caught:
        resolve_target("svc:W3SVC", NoServices())  # type: ignore[arg-type]
    assert "Windows service" in str(caught.value)

    class Services(NoServices):
        def service_pid(self, name):
            raise ProcessNotFound(f"svc:{name}", f"asked for {name}")

    with pytest.raises(ProcessNotFound, match="asked for W3SVC"):
        resolve_target(" SVC:W3SVC ", Services())  # type: ignore[arg-type]


def test_a_second_ctrl_c_while_stop_waits_is_held_until_the_write_has_returned(win):
    import _thread

    writer = Writer(win, asks=False, seconds=1.0)  # Wine-like: the write runs its second out
    win.fake.impls["MiniDumpWriteDump"] = writer
    win.fake.impls["WaitForDebugEvent"] = _exception_event(win)
    win.fake.impls["GetThreadContext"] = lambda *a: 1

    def fire(pid, firing, hand_over):
        try:
            hand_over(lambda: _dump(win, event=firing.event))
        except DumpFailed:
            pass

    loop = win.debugloop.DebugLoop(PID, [ExceptionRaised()], fire)
    loop.start()
    assert writer.started.wait(LONGEST)
    threading.Timer(0.2, _thread.interrupt_main).start()
    with pytest.raises(KeyboardInterrupt):
        loop.stop()
    assert writer.ended.is_set(), "the second Ctrl-C cut the wait short while MiniDumpWriteDump ran"


def test_watch_dumps_default_to_a_snapshot_only_where_windows_has_pss(monkeypatch):
    from winfake import FakeWin32

    with_pss = FakeWin32()
    with_pss.absent -= {"PssCaptureSnapshot", "PssQuerySnapshot", "PssFreeSnapshot"}
    with fake_windows(monkeypatch, with_pss) as win:
        assert win.backend.WindowsPlatform.watch_snapshot == "auto"
    with fake_windows(monkeypatch) as win:  # Wine, Windows before 8.1: written as before, no warning per dump
        assert win.backend.WindowsPlatform.watch_snapshot is False


def test_a_write_the_debugger_thread_starts_after_stop_was_asked_is_cancelled_too(win):
    """stop() comes while the debugger thread is between the event and its write (the guard, a
    dump queued behind another): the write that then starts must be cancelled as well, not waited
    out for as long as it takes to write a full dump with every thread suspended."""
    writer = Writer(win, seconds=5.0)
    win.fake.impls["MiniDumpWriteDump"] = writer
    win.fake.impls["WaitForDebugEvent"] = _exception_event(win)
    win.fake.impls["GetThreadContext"] = lambda *a: 1
    entered, go, outcome = threading.Event(), threading.Event(), {}

    def fire(pid, firing, hand_over):
        entered.set()
        go.wait(LONGEST)  # still on its way to MiniDumpWriteDump when stop() is asked
        try:
            hand_over(lambda: _dump(win, event=firing.event))
        except DumpFailed as exc:
            outcome["error"] = exc

    loop = win.debugloop.DebugLoop(PID, [ExceptionRaised()], fire)
    loop.start()
    assert entered.wait(LONGEST)
    threading.Timer(0.3, go.set).start()
    loop.stop()
    assert writer.started.is_set() and writer.ended.is_set()
    assert writer.cancelled, "a write begun after stop() ran to its end with the target suspended"
    assert outcome["error"].reason == "cancelled"


def test_after_a_console_close_no_write_starts_while_windows_ends_the_process(win):
    """The handler returns and Windows ends the process: a write another thread was about to start
    (its guard, its file) must not begin then, or the process dies with the target suspended."""
    win.fake.impls["MiniDumpWriteDump"] = lambda *a: 1
    _dump(win)  # the first write installs the handler
    assert _console_handler(win)(2) == 0
    with pytest.raises(DumpFailed) as caught:
        _dump(win)
    assert caught.value.reason == "cancelled"
    assert len(win.fake.named("MiniDumpWriteDump")) == 1, "a write began after the console was closed"


def _breakpoints_then(win, pid, codes):
    dbg = win.debugapi
    queue = list(codes)

    def wait(event_ref, ms):
        if not queue:
            time.sleep(ms / 1000)
            return win.fake.fail(121)
        event = event_ref._obj
        event.dwDebugEventCode = dbg.EXCEPTION_DEBUG_EVENT
        event.dwProcessId, event.dwThreadId = pid, 7
        event.u.Exception.ExceptionRecord.ExceptionCode = queue.pop(0)
        event.u.Exception.dwFirstChance = 1
        return 1
    return wait


def _fired_codes(loop, fired, want):
    loop.start()
    try:
        for _ in range(500):
            if len(fired) >= want:
                break
            time.sleep(0.01)
        time.sleep(0.2)  # and nothing more comes
    finally:
        loop.stop()
    return fired


def test_a_launched_wow64_programs_two_loader_breakpoints_are_not_dumps(win, monkeypatch):
    """A 64-bit debugger that creates a 32-bit process sees two loader breakpoints: the native
    ntdll's (STATUS_BREAKPOINT) and then WOW64's (STATUS_WX86_BREAKPOINT). Neither is the program's
    own exception; a watch with the default trigger (first chance, any code) dumped the second."""
    dbg = win.debugapi

    class Popen:
        pid = 555

        def __init__(self, argv, creationflags=0):
            pass

    monkeypatch.setattr(win.debugloop.subprocess, "Popen", Popen)
    win.fake.impls["WaitForDebugEvent"] = _breakpoints_then(
        win, 555, [dbg.EXCEPTION_BREAKPOINT, dbg.STATUS_WX86_BREAKPOINT, 0xC0000005])
    events = win.debugloop.WindowsEvents()
    events.launch_held(["app32.exe"])
    fired = []
    loop = events.source(555, [ExceptionRaised()], lambda pid, firing, hand_over: fired.append(firing.event.code))
    assert _fired_codes(loop, fired, 1) == [0xC0000005]


def test_an_attached_wow64_programs_own_breakpoint_after_the_attach_is_still_seen(win):
    """Attaching raises one breakpoint (the native attach thread's); a later STATUS_WX86_BREAKPOINT
    is the 32-bit program's own int3 and counts."""
    dbg = win.debugapi
    win.fake.impls["WaitForDebugEvent"] = _breakpoints_then(win, PID, [dbg.EXCEPTION_BREAKPOINT,
                                                                       dbg.STATUS_WX86_BREAKPOINT])
    fired = []
    loop = win.debugloop.DebugLoop(PID, [ExceptionRaised()],
                                   lambda pid, firing, hand_over: fired.append(firing.event.code))
    assert _fired_codes(loop, fired, 1) == [dbg.STATUS_WX86_BREAKPOINT]


@pytest.mark.parametrize("name", ["", "a/b"], ids=["empty", "slash"])
def test_a_name_the_scm_calls_invalid_is_process_not_found_too(win, name):
    """OpenServiceW fails with ERROR_INVALID_NAME (123) for a name no service can have (`svc:` alone)."""
    from dumplib.errors import ProcessNotFound

    win.fake.impls.update(OpenSCManagerW=lambda *a: win.fake.handle("scm"),
                          OpenServiceW=lambda *a: win.fake.fail(123))
    with pytest.raises(ProcessNotFound) as caught:
        win.wrappers.service_pid(name)
    assert caught.value.target == f"svc:{name}"
    assert len(win.fake.named("CloseServiceHandle")) == 1  # the manager's


def test_python_exiting_cancels_a_daemon_threads_write_and_waits_for_it(win, monkeypatch):
    """A library caller's dump on a daemon thread when Python exits: CPython freezes daemon threads
    at finalization, one frozen inside MiniDumpWriteDump's callback never returns, and the process
    ends with the target suspended. An atexit hook (run after non-daemon threads are joined, while
    daemon threads still run) cancels every write and waits for it."""
    import atexit

    registered = []
    monkeypatch.setattr(atexit, "register", lambda fn, *a, **k: registered.append(fn) or fn)
    writer = Writer(win)
    win.fake.impls["MiniDumpWriteDump"] = writer
    cleaned = threading.Event()

    def dump_then_clean_up():
        try:
            return _dump(win)
        finally:
            time.sleep(0.2)  # what follows the write on its thread: removing the temporary
            cleaned.set()

    t, out = _in_thread(dump_then_clean_up)
    assert writer.started.wait(LONGEST)
    assert len(registered) == 1, "nothing runs at Python's exit to cancel the write"
    registered[0]()  # what Python's exit runs
    assert writer.ended.is_set() and writer.cancelled, "Python's exit went on while MiniDumpWriteDump ran"
    assert cleaned.is_set(), "Python's exit went on before the write's thread removed its temporary"
    t.join(LONGEST)
    assert out["error"].reason == "cancelled"
