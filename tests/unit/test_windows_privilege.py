"""SeDebugPrivilege is on for the whole of every write, capture and attach, and put back after, on
every path and across threads; `ps` and `estimate` never turn it on; nothing opens the target for
dumping before the free-space guard.

Run on every OS against a recording fake of the Win32 calls (tests/winfake.py): the order of the
calls is the promise here. What the real calls do is proved on Windows by test_windows_native.py
and the workflow's service-account tests.
"""
import threading

import pytest

from dumplib.errors import AccessDenied, DumpFailed
from dumplib.kinds import DumpKind
from dumplib.results import ProcessInfo
from winfake import PID, dump, open_kinds, plan_for, win  # noqa: F401 - win is the fixture

VM_READ = 0x0010
DUP_HANDLE = 0x0040
ERROR_ACCESS_DENIED = 5
ERROR_DISK_FULL = 112


def _opens(win):
    return [(c.args[0], c.privileged) for c in win.fake.named("OpenProcess")]


# -- the counted hold itself -----------------------------------------------------------------------

class _Token:
    def __init__(self, held=True):
        self.enabled, self.held, self.log = False, held, []

    def enable(self):
        self.log.append("enable")
        before, self.enabled = self.enabled, self.held or self.enabled
        return self.held, before

    def restore(self, before):
        self.log.append("restore")
        self.enabled = before


def _hold(token):
    from dumplib._windows.privilege import PrivilegeHold  # pure logic: imports on every OS

    return PrivilegeHold(token.enable, token.restore)


def test_the_hold_enables_for_the_body_and_restores_after_even_when_the_body_raises():
    token = _Token()
    hold = _hold(token)
    with hold.held() as held:
        assert held and token.enabled
    assert not token.enabled and token.log == ["enable", "restore"]
    with pytest.raises(ZeroDivisionError):
        with hold.held():
            assert token.enabled
            1 / 0
    assert not token.enabled and hold.holders == 0


def test_a_privilege_already_on_stays_on_and_one_not_held_is_never_restored():
    token = _Token()
    token.enabled = True
    with _hold(token).held():
        pass
    assert token.enabled, "a caller that had it on lost it"
    absent = _Token(held=False)
    with _hold(absent).held() as held:
        assert held is False
    assert absent.log == ["enable"], "restore ran for a privilege the token does not hold"


def test_an_enable_that_fails_leaves_no_holder_behind():
    token = _Token()
    hold = _hold(token)

    def broken():
        raise OSError("token")

    hold._enable = broken
    with pytest.raises(OSError):
        with hold.held():
            pass
    assert hold.holders == 0
    hold._enable = token.enable
    with hold.held():
        assert token.enabled  # the next holder enables it again: no count was leaked


def test_two_overlapping_holds_keep_it_on_until_the_last_one_leaves():
    token = _Token()
    hold = _hold(token)
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def second():
        first_in.wait(5)
        with hold.held():
            second_in.set()
            first_out.wait(5)
            seen["after first left"] = token.enabled
    worker = threading.Thread(target=second)
    worker.start()
    with hold.held():
        first_in.set()
        assert second_in.wait(5)
    first_out.set()
    worker.join(5)
    assert seen == {"after first left": True}, "the first holder switched it off under the second"
    assert not token.enabled and token.log == ["enable", "restore"]


# -- the backend, against the recording fake ------------------------------------------------------

def test_the_write_runs_with_the_privilege_on_and_puts_it_back(win):
    dump(win)
    fake = win.fake
    (write,) = fake.named("MiniDumpWriteDump")
    assert write.privileged, "MiniDumpWriteDump ran with SeDebugPrivilege off"
    assert [c.name for c in fake.calls if c.name == "OpenProcess" and c.args[0] & VM_READ]
    assert all(privileged for _, privileged in _opens(win)), _opens(win)
    assert not fake.debug_enabled, "SeDebugPrivilege was left on"
    assert open_kinds(fake) == [], "the session or the write left a handle open"


# -- the session owns its handles ------------------------------------------------------------------

def test_a_session_closes_every_process_handle_it_took_and_refuses_use_after_close(win):
    """The walk handle from open() and the dump-access handle write() reopens are both the session's:
    closing it closes whichever it holds, once (no process-wide table keeps them)."""
    target = ProcessInfo(PID, "svc.exe")
    session = win.backend.WindowsPlatform().open(target, for_dump=True)
    with session:
        session.write(plan_for(), "C:\\dumps\\x.tmp", _options())
        assert open_kinds(win.fake) == ["process"], "the reopened handle and the walk handle both live, or none"
    assert open_kinds(win.fake) == []
    closes = [c.args[0] for c in win.fake.named("CloseHandle")]
    assert len(closes) == len(set(closes)), f"a handle was closed twice: {closes}"
    session.close()  # a second close is harmless
    with pytest.raises(DumpFailed, match="after it was closed"):
        session.plan(DumpKind.MINI, None)


def test_two_sessions_on_one_pid_never_close_each_others_handle(win):
    """Two dumps of one process from two callers: the one that ends first must leave the other's
    handle open (the old per-pid table released it), and the other still writes through it."""
    platform = win.backend.WindowsPlatform()
    target = ProcessInfo(PID, "svc.exe")
    with platform.open(target, for_dump=True) as first:
        with platform.open(target, for_dump=True) as second:
            second.write(plan_for(), "C:\\dumps\\y.tmp", _options())
            kept = second.handle
        assert first.handle in win.fake.open_handles and kept not in win.fake.open_handles
        first.write(plan_for(), "C:\\dumps\\x.tmp", _options())
        assert win.fake.named("MiniDumpWriteDump")[1].args[0] == first.handle, "the second write used another handle"
    assert open_kinds(win.fake) == []


def _options():
    from dumplib._platform import WriteOptions

    return WriteOptions(comment=None, signature="{}")


def test_opening_for_a_dump_takes_no_vm_read_so_the_guard_runs_first(win):
    target = ProcessInfo(PID, "svc.exe")
    with win.backend.WindowsPlatform().open(target, for_dump=True) as session:
        assert _opens(win) and not any(access & (VM_READ | DUP_HANDLE) for access, _ in _opens(win)), _opens(win)
        session.plan(DumpKind.MINI, None)  # the estimate the guard compares
        assert not any(access & VM_READ for access, _ in _opens(win))
    assert not win.fake.debug_enabled
    assert "process" not in open_kinds(win.fake), "the session kept its handle after it was closed"


def test_ps_and_estimate_never_enable_the_privilege(win):
    platform = win.backend.WindowsPlatform()
    target = ProcessInfo(PID, "svc.exe")
    with platform.open(target) as session:  # estimate, and `dumplib ps`'s full-dump column: a walk-only open
        session.plan(DumpKind.FULL, None)
    assert win.fake.calls and not any(c.privileged for c in win.fake.calls)
    assert not win.fake.named("AdjustTokenPrivileges")


@pytest.mark.parametrize("code, error", [(ERROR_ACCESS_DENIED, AccessDenied), (ERROR_DISK_FULL, DumpFailed)])
def test_a_failed_write_still_puts_the_privilege_back_and_closes_the_file(win, code, error):
    win.fake.impls["MiniDumpWriteDump"] = lambda *a: win.fake.fail(0x80070000 | code)
    with pytest.raises(error):
        dump(win)
    assert win.fake.named("MiniDumpWriteDump")[0].privileged
    assert not win.fake.debug_enabled
    assert "file" not in win.fake.open_handles.values() and "process" not in win.fake.open_handles.values()


def test_an_interrupt_inside_the_write_puts_the_privilege_back(win):
    def interrupted(*args):
        raise KeyboardInterrupt

    win.fake.impls["MiniDumpWriteDump"] = interrupted
    with pytest.raises(KeyboardInterrupt):
        dump(win)
    assert not win.fake.debug_enabled


def test_a_denied_open_for_the_dump_says_the_privilege_was_tried_and_restores_it(win):
    win.fake.impls["OpenProcess"] = lambda access, inherit, pid: (
        win.fake.fail(ERROR_ACCESS_DENIED) if access & VM_READ else win.fake.handle("process"))
    with pytest.raises(AccessDenied) as caught:
        dump(win)
    assert caught.value.debug_privilege is True
    assert not win.fake.debug_enabled


def test_a_token_without_the_privilege_is_not_adjusted_back(win):
    win.fake.holds_debug = False
    dump(win)
    adjusts = win.fake.named("AdjustTokenPrivileges")
    # Only enables (each answered NOT_ALL_ASSIGNED), never a "restore" of what was never changed.
    assert adjusts and all(c.args[2]._obj.Privileges[0].Attributes == 2 for c in adjusts)


def test_two_dumps_on_two_threads_keep_it_on_for_each_others_write(win):
    """The first write ends while the second waits for dbghelp: the second still writes privileged."""
    fake = win.fake
    first_writing, release_first = threading.Event(), threading.Event()
    order = []

    def write(*args):
        order.append(threading.current_thread().name)
        if len(order) == 1:
            first_writing.set()
            release_first.wait(10)
        return 1

    fake.impls["MiniDumpWriteDump"] = write
    platform = win.backend.WindowsPlatform()
    errors = []

    def run(pid):
        try:
            dump(win, plan_for(pid), platform=platform)
        except BaseException as exc:  # noqa: B036 - reported by the assertion below
            errors.append(exc)

    one = threading.Thread(target=run, args=(PID,), name="one")
    one.start()
    assert first_writing.wait(10)
    two = threading.Thread(target=run, args=(PID + 1,), name="two")
    two.start()
    # "two" has opened its target (privileged) and now waits for the dbghelp lock.
    for _ in range(500):
        if any(c.thread == "two" and c.name == "OpenProcess" and c.args[0] & VM_READ for c in fake.calls):
            break
        threading.Event().wait(0.01)
    release_first.set()
    one.join(10)
    two.join(10)
    assert not errors, errors
    writes = fake.named("MiniDumpWriteDump")
    assert [c.thread for c in writes] == ["one", "two"]
    assert all(c.privileged for c in writes), [(c.thread, c.privileged) for c in writes]
    assert not fake.debug_enabled


def test_a_snapshot_is_captured_and_written_from_with_the_privilege_on_and_freed_once(monkeypatch):
    """PssCaptureSnapshot opens every thread of the target too: privileged, like the write from the
    snapshot; the snapshot is freed once whatever happens, and the token put back."""
    from winfake import FakeWin32, fake_windows

    fake = FakeWin32()
    fake.absent -= {"PssCaptureSnapshot", "PssQuerySnapshot", "PssFreeSnapshot"}

    def capture(process, flags, context, out):
        out._obj.value = fake.handle("snapshot")
        return 0  # ERROR_SUCCESS

    def free(process, snapshot):
        fake.open_handles.pop(snapshot, None)
        return 0

    fake.impls.update(PssCaptureSnapshot=capture, PssFreeSnapshot=free, PssQuerySnapshot=lambda *a: 50)
    with fake_windows(monkeypatch, fake) as win:
        monkeypatch.setattr(win.wrappers, "create_new_file", lambda path: fake.handle("file"))
        monkeypatch.setattr(win.backend, "commit_shortfall", lambda process: None)  # room for the clone
        report = dump(win, snapshot=True)
    (captured,) = fake.named("PssCaptureSnapshot")
    (write,) = fake.named("MiniDumpWriteDump")
    (freed,) = fake.named("PssFreeSnapshot")
    assert report.snapshot is True
    assert captured.privileged and write.privileged, "the capture or the write ran without SeDebugPrivilege"
    assert write.args[0] == freed.args[1], "the dump was not read from the snapshot that was freed"
    assert not fake.debug_enabled and open_kinds(fake) == [], open_kinds(fake)


# -- the debugger's attach -------------------------------------------------------------------------

def test_the_debugger_attaches_with_the_privilege_on_and_puts_it_back(win):
    loop = win.debugloop.DebugLoop(PID, [], lambda *a: None)
    loop.start()
    try:
        (attach,) = win.fake.named("DebugActiveProcess")
        assert attach.privileged
    finally:
        loop.stop()
    assert not win.fake.debug_enabled


def test_a_failed_kill_on_exit_detaches_before_the_error_is_reported(win):
    win.fake.impls["DebugSetProcessKillOnExit"] = lambda flag: win.fake.fail(ERROR_ACCESS_DENIED)
    loop = win.debugloop.DebugLoop(PID, [], lambda *a: None)
    with pytest.raises(AccessDenied):
        loop.start()
    names = [c.name for c in win.fake.calls if c.name.startswith("Debug")]
    assert names == ["DebugActiveProcess", "DebugSetProcessKillOnExit", "DebugActiveProcessStop"], names
    assert not win.fake.debug_enabled


def test_a_token_without_the_privilege_is_closed_after_eachdump(win):
    """AdjustTokenPrivileges says ERROR_NOT_ALL_ASSIGNED (not held): nothing to restore, but the token
    handle opened to try is still closed; a watcher of a non-elevated user would leak one per dump."""
    win.fake.holds_debug = False
    for _ in range(3):
        dump(win)
    assert win.fake.named("OpenProcessToken")
    assert "token" not in win.fake.open_handles.values(), win.fake.open_handles


def test_psutils_import_never_turns_the_privilege_off_under_another_threads_dump(win, monkeypatch, tmp_path):
    """psutil's import enables SeDebugPrivilege and dumplib puts the token back after it; a dump that
    took its hold on another thread meanwhile must keep it on until that dump's own hold ends."""
    import builtins
    import ctypes
    import struct
    import sys

    import psutil  # noqa: F401 - the real one, put back by monkeypatch after the stub below

    fake = win.fake

    def token_information(token, cls, buf, size, needed):
        needed._obj.value = 16
        if buf is None or int(getattr(size, "value", size)) < 16:
            return fake.fail(122)  # ERROR_INSUFFICIENT_BUFFER
        ctypes.memmove(buf, struct.pack("<IIiI", 1, 20, 0, 2 if fake.debug_enabled else 0), 16)
        return 1

    fake.impls["GetTokenInformation"] = token_information
    holding, release, seen = threading.Event(), threading.Event(), {}

    def dump_on_another_thread():
        with win.wrappers.DEBUG_PRIVILEGE.held():
            holding.set()
            release.wait(10)
            seen["at_its_end"] = fake.debug_enabled

    def psutil_import():
        threading.Thread(target=dump_on_another_thread, daemon=True).start()
        assert holding.wait(10)
        fake.debug_enabled = True  # what psutil's module init does to the process's token

    (tmp_path / "psutil.py").write_text("import builtins\nbuiltins._dumplib_test_psutil_import()\n")
    monkeypatch.setattr(builtins, "_dumplib_test_psutil_import", psutil_import, raising=False)
    monkeypatch.delitem(sys.modules, "psutil")
    monkeypatch.syspath_prepend(str(tmp_path))
    win.host.import_psutil()
    release.set()
    for _ in range(500):
        if "at_its_end" in seen:
            break
        threading.Event().wait(0.01)
    assert seen.get("at_its_end") is True, "psutil's import put the token back under another thread's dump"
    assert not fake.debug_enabled  # and once every holder is out, the token is as it was
