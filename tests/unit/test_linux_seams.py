"""The seams of dumplib/_linux that every tracer shares, checked without a target: the /proc stat
parser's named fields, the one OSError -> error mapping, the register sizes, the Mailbox through which
other threads ask the ptrace owner, and the platform guard that survives `python -O`."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINUX_MODULES = sorted(
    ".".join(("dumplib",) + p.relative_to(ROOT / "dumplib").with_suffix("").parts).removesuffix(".__init__")
    for p in (ROOT / "dumplib" / "_linux").rglob("*.py"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="imports every module on Linux first")
def test_every_linux_module_refuses_another_platform_even_under_dash_O():
    # Every module is imported on Linux first, so that re-importing one on "another platform" runs its
    # own guard, not its package's. sys.platform is what the guard reads; -O strips asserts, so an
    # assert alone would let the module import.
    probe = ("import sys, importlib\n"
             f"names = {LINUX_MODULES!r}\n"
             "for name in names:\n    importlib.import_module(name)\n"
             "saved = dict(sys.modules)\nsys.platform = 'win32'\nbad = []\n"
             "for name in names:\n"
             "    sys.modules.update(saved)  # its packages as imported on Linux: only its own guard runs\n"
             "    del sys.modules[name]\n"
             "    try:\n        importlib.import_module(name)\n    except ImportError as e:\n"
             "        if 'Linux only' not in str(e): bad.append((name, str(e)))\n"
             "    else:\n        bad.append((name, 'imported'))\n"
             "print(bad)\n")
    done = subprocess.run([sys.executable, "-O", "-c", probe], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
    assert len(LINUX_MODULES) > 20


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="dumplib._linux imports on Linux only")


@linux_only
def test_stat_fields_are_read_by_name_past_a_comm_with_parentheses_and_spaces():
    from dumplib._linux.proc.pidfiles import parse_stat

    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime
    # cstime priority nice threads itrealvalue starttime ...
    line = b"42 (a) (b c) S 7 8 9 0 -1 4194560 1 2 3 4 5 6 7 8 20 -5 3 0 123456 999 77"
    stat = parse_stat(line)
    assert stat is not None
    assert (stat.comm, stat.state, stat.ppid, stat.pgrp, stat.session) == (b"a) (b c", "S", 7, 8, 9)
    assert (stat.flags, stat.nice, stat.start_ticks) == (4194560, -5, 123456)
    assert parse_stat(b"42 no parentheses") is None


@linux_only
def test_the_start_time_is_psutils():
    import os

    psutil = pytest.importorskip("psutil")
    from dumplib._linux.proc import pidfiles

    assert abs(pidfiles.started(os.getpid()) - psutil.Process().create_time()) < 1e-6
    assert pidfiles.parent_of(os.getpid()) == os.getppid()


@linux_only
@pytest.mark.parametrize("code", [errno.ESRCH, errno.ENOENT])
def test_a_gone_process_is_process_not_found_before_the_dump_and_target_exited_during_it(code):
    from dumplib._linux.proc.errors import target_error
    from dumplib.errors import DumpFailed, ProcessNotFound

    before = target_error(OSError(code, "gone"), 4242, "read /proc/4242/smaps of")
    assert type(before) is ProcessNotFound
    during = target_error(OSError(code, "gone"), 4242, "reading memory of", mid_dump=True)
    assert type(during) is DumpFailed and during.reason == "exited"


@linux_only
def test_other_errors_are_dump_failed_with_their_errno():
    from dumplib._linux.proc.errors import target_error
    from dumplib.errors import AccessDenied, DumpFailed, TargetRefused

    err = target_error(OSError(errno.EIO, "io"), 4242, "reading memory of", mid_dump=True)
    assert type(err) is DumpFailed and err.errno == errno.EIO and "reading memory of process 4242" in str(err)
    refused = target_error(OSError(errno.EPERM, "no"), 1, "read /proc/1/smaps of")
    assert isinstance(refused, (AccessDenied, TargetRefused))
    assert type(target_error(OSError(errno.EPERM, "no"), 1, "reading memory of", mid_dump=True)) is DumpFailed


@linux_only
def test_register_sizes_are_the_kernels_x86_64_structs():
    from dumplib._linux.ptrace import regs

    # struct user_regs_struct: 27 longs; FXSAVE: 512 bytes; rsp, fs_base and orig_rax at their slots.
    assert regs.USER_REGS_SIZE == 216 and regs.FPREGS_SIZE == 512
    raw = b"".join(i.to_bytes(8, "little") for i in range(27))
    state = regs.ThreadState(1)
    state.regs = raw
    assert (state.stack_pointer, state.thread_pointer, regs.slot(raw, regs.ORIG_RAX)) == (19, 21, 15)


@linux_only
def test_the_general_registers_read_are_the_whole_struct():
    """A real tracee's NT_PRSTATUS: read_general asks for exactly user_regs_struct, and gets all of it."""
    import ctypes
    import os
    import signal

    from dumplib._linux.ptrace import libc, regs

    child = subprocess.Popen(["sleep", "30"])
    try:
        libc.ptrace(libc.PTRACE_SEIZE, child.pid, None, None)
        libc.ptrace(libc.PTRACE_INTERRUPT, child.pid, None, None)
        status = ctypes.c_int()
        deadline = time.monotonic() + 5
        while libc.waitpid(child.pid, ctypes.byref(status), libc.WALL | libc.WNOHANG) == 0:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        raw = regs.read_general(child.pid)
        assert len(raw) == regs.USER_REGS_SIZE
        assert regs.slot(raw, regs.RIP) != 0 and regs.slot(raw, regs.RSP) != 0
        libc.ptrace(libc.PTRACE_DETACH, child.pid, None, None)
    except OSError as exc:
        if exc.errno == errno.EPERM:
            pytest.skip("ptrace not allowed here")
        raise
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()


def _owner(mailbox, stop, served):
    while not stop.is_set():
        if mailbox.serve():
            served.append(1)
        time.sleep(0.001)


@linux_only
def test_the_mailbox_runs_requests_on_the_owner_thread_and_hands_back_answers_and_errors():
    from dumplib._linux.ptrace.mailbox import Mailbox

    mailbox, stop, served = Mailbox(), threading.Event(), []
    owner = threading.Thread(target=_owner, args=(mailbox, stop, served), daemon=True)
    owner.start()
    try:
        assert mailbox.ask(owner, lambda: threading.current_thread()) is owner
        with pytest.raises(KeyError):
            mailbox.ask(owner, lambda: {}["x"])
        assert mailbox.ask(threading.current_thread(), lambda: 7) == 7  # the owner itself: run at once
        assert len(served) == 2 and not mailbox.waiting
    finally:
        stop.set()
        owner.join(5)


@linux_only
def test_an_ask_gives_up_once_the_owner_has_ended():
    from dumplib._linux.ptrace.mailbox import Mailbox, OwnerGone

    mailbox = Mailbox()
    owner = threading.Thread(target=time.sleep, args=(0.2,), daemon=True)  # never serves
    owner.start()
    started = time.monotonic()
    with pytest.raises(OwnerGone):
        mailbox.ask(owner, lambda: 1)
    assert time.monotonic() - started < 5


@linux_only
def test_the_stopper_lets_the_target_go_when_max_pause_runs_out_with_nobody_asking():
    """The serve loop's timeout: max_pause ends the stop even when the caller never comes back."""
    from dumplib._linux.proc.pidfiles import thread_state
    from dumplib._linux.ptrace.stopper import StoppedProcess
    from dumplib.errors import DumpFailed

    child = subprocess.Popen(["sleep", "30"])
    try:
        try:
            stopped = StoppedProcess(child.pid, max_pause=0.2).__enter__()
        except DumpFailed:
            pytest.skip("ptrace not allowed here")
        except Exception as exc:  # AccessDenied where ptrace is not allowed
            pytest.skip(f"ptrace not allowed here: {exc}")
        try:
            assert thread_state(child.pid, child.pid) == "t"
            time.sleep(0.6)
            assert stopped.expired and thread_state(child.pid, child.pid) == "S"
            with pytest.raises(DumpFailed):
                stopped.check_pause()
        finally:
            stopped.release()
    finally:
        child.kill()
        child.wait()


class _FakeClock:
    """time.monotonic and time.sleep for the stopper's polls: the clock moves only by what is slept,
    so the naps a poll takes are the same on any machine at any load."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.naps: list = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        if len(self.naps) > 10_000:
            raise AssertionError("the poll never ended")
        self.naps.append(seconds)
        self.now += seconds


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux stopper")
def test_the_callers_polls_of_the_tracer_look_often_at_first_then_seldom_and_end_at_their_patience(monkeypatch):
    # The wait for the tracer thread to leave the kernel (the end of every dump's stop, before the
    # command goes on): 0.1 ms apart for its first 5 ms, where the thread is gone within a millisecond or
    # so and each nap's overshoot was the command's wall time (docs/benchmarks.md, eleventh session), then
    # 0.5 ms; and it gives up at its patience. This thread's own entry in /proc/self/task never goes away.
    from dumplib._linux.ptrace import stopper

    clock = _FakeClock()
    monkeypatch.setattr(stopper, "time", clock)
    stopper._wait_thread_gone(threading.get_native_id(), patience=0.01)
    quick = [n for n in clock.naps if n == stopper.QUICK_NAP]
    assert stopper.QUICK_NAP <= 0.0001 and stopper.SLOW_NAP >= 0.0005
    assert clock.naps[:len(quick)] == quick and len(quick) == pytest.approx(stopper.QUICK_FOR / stopper.QUICK_NAP, abs=1)
    assert set(clock.naps[len(quick):]) == {stopper.SLOW_NAP}
    assert 0.01 <= clock.now - 1000.0 < 0.01 + stopper.SLOW_NAP


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux stopper")
def test_the_wait_for_the_tracer_to_have_stopped_the_target_polls_on_the_quick_schedule(monkeypatch):
    # __enter__ waits for the tracer's "every thread stopped": its naps' overshoot is the target's stop.
    from dumplib._linux.ptrace import stopper

    naps: list = []
    real_nap = stopper._nap
    monkeypatch.setattr(stopper, "_nap", lambda since: (naps.append(threading.get_native_id()), real_nap(since)))

    class LateTracer(stopper.StoppedProcess):
        def _trace(self) -> None:  # no ptrace: ready after a while, as a real tracer is
            time.sleep(0.02)
            self._ready.set()

    with LateTracer(os.getpid(), max_pause=5.0):
        assert threading.get_native_id() in naps  # __enter__'s own naps (release's come after)
