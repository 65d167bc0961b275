"""Watching a process's signals with ptrace, and handing it to create_dump at a signal-delivery-stop.

The watcher seizes every thread (PTRACE_SEIZE: no SIGSTOP is sent, and if the watcher dies the
kernel detaches and the target runs on). A watched signal about to be delivered stops its thread
in signal-delivery-stop, before any handler or default action. A process has one tracer, and
create_dump must be it, so the hand-over is:

  1. interrupt every other thread (all now in ptrace-stops, none running);
  2. save the signal's siginfo, queue SIGSTOP, detach every thread: the SIGSTOP is taken before
     any thread returns to user mode, so the whole process sits in group-stop, untraced;
  3. create_dump, on a thread of its own, seizes, reads the memory and detaches: the group-stop
     holds the process still;
  4. as soon as the writer has let the process go (ptrace/handover.py: the last byte read), re-seize
     every thread, queue the same signal to the same thread, send SIGCONT;
     when that thread reports the re-queued signal, its siginfo is replaced by the saved one and it
     is delivered: the handler (or the default action) sees the signal as it was sent;
  5. the dump is flushed, read back and placed while this thread serves the process's stops; a stop
     that would start another dump waits in its thread until this one is done.
With a snapshot, 4 comes once the clone exists, and once the copy from it is done the process is
handed over a second time (ptrace/handover.held_again) for the snapshot's helper to have it reap the
clone. The dump's stopped_seconds is every hold, from the signal's stop to each SIGCONT.

What an outsider can see: the parent is told the child stopped and continued (SIGCHLD with
CLD_STOPPED / CLD_CONTINUED) and a SIGCONT handler, if any, runs once. If the watcher is killed
between 2 and 4 the process stays stopped until someone sends SIGCONT; that window is one dump's
memory read.

ProcessExit cannot use that hand-over: an exiting thread never enters group-stop. With
PTRACE_O_TRACEEXIT every thread stops at PTRACE_EVENT_EXIT, early in do_exit, before exit_mm, so
its registers and the whole address space are still there. The watcher's own thread is already
every thread's tracer, so create_dump runs on it and the core writer reads the process in place
(HeldAtExit stands in for ptrace/stopper.py StoppedProcess); then every thread is let go and finishes its
exit, and the parent sees the exit status as it was. A thread that ends alone (pthread_exit)
stops there too: the others are interrupted to tell the two apart, and all run on.
"""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import ctypes
import errno
import os
import signal
import subprocess
import threading
import time
from typing import Callable, Collection, Dict, List, Optional, Sequence, Set, Tuple, TypeVar

T = TypeVar("T")

from .._bounded import refused_fork, start_thread
from .._platform import Firing, TargetEvent
from .._record import replace
from ..errors import DumpError, DumpFailed, InvalidArgument
from ..results import DumpResult
from ..triggers import ExceptionRaised, ProcessExit, SignalReceived, Trigger
from .proc.errors import permission_error
from .proc.pidfiles import parent_of, thread_ending, thread_states
from .ptrace import libc
from .ptrace.libc import (PTRACE_CONT, PTRACE_EVENT_CLONE, PTRACE_EVENT_EXIT, PTRACE_GETEVENTMSG, PTRACE_GETSIGINFO,
                          PTRACE_LISTEN, PTRACE_O_TRACECLONE, PTRACE_O_TRACEEXIT, PTRACE_SETSIGINFO, SYS_EXIT,
                          SYS_EXIT_GROUP)
from .ptrace.handover import handed_over
from .ptrace.mailbox import Mailbox, OwnerGone
from .ptrace.regs import ORIG_RAX, ThreadState, read_general, read_registers, signal_sets, slot
#: Signals whose siginfo carries the faulting address (si_addr) when the kernel raised them.
_FAULT_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGTRAP)
_SIGINFO_SIZE = 128
_STOP_SIGNALS = (signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)
#: The tracer thread blocks in sigtimedwait for SIGCHLD (the kernel sends it to the tracer at every
#: tracee stop and exit; stop() and dump_now() send it to the thread). POLL_SECONDS bounds that wait:
#: a tracee's SIGCHLD that comes while the thread is not waiting goes to another thread and is lost,
#: so a wait ends at least this often (an idle watcher's only cost: at 50 ms it was 0.45% of a core). After a stop it looks again at once, then backs off from POLL_BUSY_SECONDS: every clone and
#: thread exit stops a thread until it is seen, and a burst of them loses signals in that window.
POLL_SECONDS = 1.0
POLL_BUSY_SECONDS = 0.0005
#: Bound on every wait for one thread to stop, or for the group-stop to settle.
STOP_PATIENCE = 5.0
#: How long stop() waits for the tracer thread to end once no dump of it is under way (it lets every
#: thread go first, each bounded by STOP_PATIENCE).
LET_GO_PATIENCE = STOP_PATIENCE * 3
#: How long a dump's writer waits for the watcher to hold the process again (a snapshot's reaping) or
#: to have let it go (for the figure of its stop): a few thread stops, each bounded by STOP_PATIENCE.
AGAIN_PATIENCE = 30.0


def _ptrace(request: int, tid: int, addr: object = None, data: object = None) -> int:
    return int(libc.ptrace(request, tid, addr, data))


def _wait(tid: int, block_for: float = 0.0, *, leave_exit: bool = False) -> Optional[int]:
    """The next status of *tid*, waiting up to *block_for* seconds; None when there is none yet.

    *leave_exit*: when *tid* has ended, report it without reaping it: the watcher is then also the
    process's parent (it launched it), and the exit status belongs to the code that started it."""
    status = ctypes.c_int()
    deadline = time.monotonic() + block_for
    while True:
        if leave_exit:
            ended = _peek_exit(tid)
            if ended is not None:
                return ended
        got = libc.waitpid(tid, ctypes.byref(status), libc.WALL | libc.WNOHANG)
        if got == tid:
            return status.value
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.002)


def _peek_exit(tid: int) -> Optional[int]:
    try:
        info = os.waitid(os.P_PID, tid, os.WEXITED | os.WNOHANG | os.WNOWAIT | libc.WALL)
    except ChildProcessError:
        return None
    if info is None or info.si_pid == 0:
        return None
    if info.si_code == os.CLD_EXITED:
        return (info.si_status & 0xFF) << 8
    if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
        return info.si_status & 0x7F
    return None  # a ptrace-stop (a tracer's wait reports those even without WSTOPPED): waitpid takes it


def launch_stopped(argv: List[str]) -> "subprocess.Popen[bytes]":
    """Start *argv* stopped before its first instruction, so the watcher can seize it before the
    program runs; the caller sends SIGCONT. A shell stops itself, then execs the program in its
    place (same pid); a preexec_fn could not stop, since Popen waits for the exec to happen."""
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", 'kill -STOP $$ && exec "$@"', "dumplib-launch", *argv])
    except OSError as exc:
        if not refused_fork(exc):
            raise
        raise DumpFailed.no_resources(f"the command {argv[0]!r}", exc.strerror, exc.errno) from None
    deadline = time.monotonic() + STOP_PATIENCE
    while thread_states(proc.pid).get(proc.pid) != "T":
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise DumpFailed(f"{argv[0]!r} did not start", pid=proc.pid)
        time.sleep(0.005)
    return proc


class _Redelivery:
    """A signal taken from a thread for a hand-over, to be queued again with its original siginfo.

    *fresh*: it was caught mid-way (another dump was being taken), so it has not been judged yet."""

    def __init__(self, signo: int, siginfo: bytes, fresh: bool = False) -> None:
        self.signo = signo
        self.siginfo = siginfo
        self.fresh = fresh


class SignalWatcher:
    """One tracer thread per watched process; see the module's description of the hand-over."""

    def __init__(self, pid: int, triggers: Sequence[SignalReceived], fire: Callable,  # type: ignore[type-arg]
                 on_exit: Sequence[ProcessExit] = ()) -> None:
        self.pid = pid
        self.triggers = list(triggers)
        self.on_exit = list(on_exit)
        self.options = PTRACE_O_TRACECLONE | (PTRACE_O_TRACEEXIT if self.on_exit else 0)
        self.fire = fire
        self.tids: List[int] = []
        self.parent = parent_of(pid) == os.getpid()
        self.redeliver: Dict[int, _Redelivery] = {}
        self._stop = threading.Event()
        #: Hand-overs asked for by other threads, run by the tracer thread between its waits.
        self._mailbox = Mailbox(self._wake, nap=0.1)
        self._ended = False
        #: Dumps of the process under way on this thread (a firing, from its first event to its last, and the
        #: hand-over inside it; or at its exit): stop() waits while there is one. Written by this thread only.
        self._dumping = 0
        #: How many times the process was handed over (detached for a dump): the signal that started
        #: one is then the hand-over's to deliver, however far it got.
        self._handed_out = 0
        #: Threads the hand-over has stopped and not yet let go: tid -> signal they stopped for.
        self._held: Dict[int, int] = {}
        #: With ProcessExit: the last signal each thread was given and its siginfo, so a death by
        #: signal is dumped with the thread it struck first and the siginfo the kernel's core holds.
        self._last_signal: Dict[int, Tuple[int, bytes]] = {}
        self._started = threading.Event()
        self._start_error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name=f"dumplib-signals-{pid}", daemon=True)

    # -- the watcher's side --------------------------------------------------------------------
    def start(self) -> None:
        start_thread(self._thread, f"the thread that watches process {self.pid}")
        if not self._started.wait(STOP_PATIENCE * 2):
            raise DumpFailed(f"could not attach to process {self.pid} in time", pid=self.pid)
        if self._start_error is not None:
            raise self._start_error

    @property
    def ended(self) -> bool:
        return self._ended

    def stop(self) -> None:
        """Let the process go; safe to call again after an interruption cut it short.

        Polled, not join(): a Ctrl-C landing inside a lock wait can leave the lock in a state the
        next call trips over, and the caller calls again after one."""
        self._stop.set()
        self._wake()
        # A hand-over under way holds the process in group-stop, an exit dump holds it at its exit:
        # abandoning either would leave the process held and, once this program ends, a partial file
        # (an exit dump was left after 15 s, its thread killed mid-write at exit). Wait for it to end:
        # the dump has bounds of its own, and a watch that ends (interrupted, or at its timeout) makes
        # it give up at its next read.
        while self._thread.is_alive() and self._dumping > 0:
            time.sleep(0.02)
        deadline = time.monotonic() + LET_GO_PATIENCE
        while self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)

    def dump_now(self, take: Callable[[], T]) -> T:
        """Run *take* (a create_dump) with the process handed over, from any thread."""
        try:
            return self._mailbox.ask(self._thread, lambda: self._handover(None, take))
        except OwnerGone:
            raise DumpFailed(f"the signal watcher of process {self.pid} ended", pid=self.pid) from None

    def _wake(self) -> None:
        """End the tracer thread's wait for SIGCHLD (held pending if it is not waiting yet)."""
        ident = self._thread.ident
        if ident is not None and self._thread.is_alive():
            try:
                signal.pthread_kill(ident, signal.SIGCHLD)
            except (ProcessLookupError, OSError):  # the thread has just ended
                pass

    # -- the tracer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._seize_all()
        except BaseException as exc:
            self._start_error = exc
            self._release_all()
            self._started.set()
            return
        self._started.set()
        try:
            nap = POLL_SECONDS
            while not self._stop.is_set() and not self._ended:
                self._mailbox.serve()
                if self._poll_once():
                    nap = POLL_BUSY_SECONDS
                    continue
                self._idle(nap)
                nap = min(nap * 2, POLL_SECONDS)
        finally:
            self._release_all()
            self._ended = True

    def _idle(self, seconds: float, job: Optional["_Job"] = None) -> None:
        """Block until SIGCHLD (a tracee stopped or ended, or _wake) or *seconds* pass.

        SIGCHLD is blocked only here (a hand-over's threads and children would inherit the mask), and
        the checks come after blocking it: a wake from then on stays pending for the wait; a tracee's
        stop in the microseconds between the last check and the wait can go to another thread, which
        *seconds* bounds. During a hand-over (*job*) the mailbox waits for it to end, and the stops
        left for later are not news."""
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        try:
            if job is not None:
                ready = not job.running() or (job.back_asked and not job.taken_back) or (
                    job.taken_back and (job.again_asked or self._any_waiting(skip=job.left)))
            else:
                ready = self._stop.is_set() or self._mailbox.waiting or self._any_waiting()
            if not ready:
                signal.sigtimedwait({signal.SIGCHLD}, seconds)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})

    def _any_waiting(self, skip: Collection[int] = ()) -> bool:
        """Whether a tracee has a stop or exit to report, without taking it (WNOWAIT)."""
        for tid in self.tids:
            if tid in skip:
                continue
            try:
                if os.waitid(os.P_PID, tid, os.WEXITED | os.WSTOPPED | os.WNOHANG | os.WNOWAIT | libc.WALL) is not None:
                    return True
            except ChildProcessError:  # gone: _poll_once forgets it
                return True
        return False

    def _seize_all(self) -> None:
        while True:
            new = [t for t in thread_states(self.pid) if t not in self.tids]
            if not new:
                if not self.tids:
                    raise DumpFailed(f"process {self.pid} has exited", pid=self.pid)
                return
            for tid in new:
                self._seize(tid)

    def _seize(self, tid: int) -> None:
        try:
            _ptrace(libc.PTRACE_SEIZE, tid, None, ctypes.c_void_p(self.options))
        except OSError as exc:
            if exc.errno == errno.ESRCH and tid != self.pid:
                return
            if exc.errno in (errno.EPERM, errno.ESRCH) and self._has_exited():
                # The kernel refuses to seize a thread that is exiting (EPERM) or gone (ESRCH): a process
                # killed since its threads were listed is not a refusal, and saying "the kernel refused
                # ptrace" would make up a cause.
                raise DumpFailed(f"process {self.pid} has exited", pid=self.pid, reason="exited") from None
            if exc.errno == errno.EPERM:
                raise permission_error(self.pid) from None
            raise DumpFailed(f"cannot seize thread {tid} of process {self.pid}: {exc}", pid=self.pid) from None
        self.tids.append(tid)

    def _has_exited(self) -> bool:
        """Whether every thread of the process has ended or is ending: a zombie (Z), dying (X), gone, in
        do_exit (PF_EXITING, which is what makes the kernel refuse to seize it), or with a SIGKILL
        pending (a group exit: it has yet to reach do_exit, and nothing stops it doing so)."""
        return all(thread_ending(self.pid, tid) for tid in thread_states(self.pid))

    def _poll_once(self) -> bool:
        """Handle every stop that is waiting; True if there was one."""
        busy = False
        for tid in list(self.tids):
            try:
                status = _wait(tid, leave_exit=self.parent and tid == self.pid)
            except OSError:  # ECHILD: gone and reaped
                self._forget(tid)
                continue
            if status is None:
                continue
            busy = True
            self._on_status(tid, status)
        return busy

    def _on_status(self, tid: int, status: int) -> None:
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            self._forget(tid)
            return
        if not os.WIFSTOPPED(status):
            return
        sig = os.WSTOPSIG(status)
        event = status >> 16
        if event == PTRACE_EVENT_CLONE:
            self._adopt_clone(tid)
            self._resume(tid, 0)
        elif event == PTRACE_EVENT_EXIT:
            self._on_exit(tid)
        elif event == libc.PTRACE_EVENT_STOP:
            if sig in _STOP_SIGNALS:
                self._listen(tid)  # a real group-stop (kill -STOP): keep it stopped as job control wants
            else:
                self._resume(tid, 0)
        elif event == 0:
            self._on_signal(tid, sig)
        else:
            self._resume(tid, 0)

    def _adopt_clone(self, tid: int) -> None:
        msg = ctypes.c_ulong()
        try:
            _ptrace(PTRACE_GETEVENTMSG, tid, None, ctypes.byref(msg))
        except OSError:
            return
        if msg.value and msg.value not in self.tids:
            self.tids.append(msg.value)

    def _on_signal(self, tid: int, sig: int) -> None:
        seen = time.monotonic()  # the thread is held from its signal's stop: a hand-over's stop starts here
        again = self.redeliver.get(tid)
        if again is not None and again.signo == sig:
            del self.redeliver[tid]  # another signal first (the hand-over's SIGCONT): the copy is still to come
            self._set_siginfo(tid, again.siginfo)  # our re-queued copy carries the original's siginfo
            if not again.fresh:
                self._resume(tid, sig)
                return
        trigger = next((t for t in self.triggers if sig in t.signals), None)
        if trigger is None:
            if self.on_exit:
                self._last_signal[tid] = (sig, self._get_siginfo(tid))
            self._resume(tid, sig)
            return
        siginfo = self._get_siginfo(tid)
        detail = _describe_siginfo(sig, siginfo, tid)
        event = TargetEvent("signal", tid=tid, code=sig, address=_fault_address(sig, siginfo), raw=siginfo or None)
        handed = self._handed_out
        # Counted from here, not from the hand-over only: a stop() between the firing's first event (which
        # may block on the caller's on_event) and the hand-over would stop waiting, and the process be
        # handed over, stopped, after the program had let go of it.
        self._dumping += 1
        try:
            self.fire(self.pid, Firing(trigger, float(sig), detail, event),
                      lambda take: self._handover(_Redelivery(sig, siginfo), take, tid=tid, since=seen))
        finally:
            self._dumping -= 1
        if self._handed_out != handed or tid not in self.tids:
            return  # handed over (the signal came back re-queued, and may be delivered already), or gone
        self._resume(tid, sig)  # not dumped (count, interval, rate limit): deliver it now

    # -- exit ----------------------------------------------------------------------------------
    def _on_exit(self, tid: int) -> None:
        """*tid* stopped at PTRACE_EVENT_EXIT: if the whole process is ending, dump it now, in place."""
        if len(self.tids) > 1 and _syscall_at_exit(tid) == SYS_EXIT:
            self._resume(tid, 0)  # exit(2) ends one thread (pthread_exit); the process runs on, nobody stopped
            return
        status = self._event_message(tid)
        exiting, alive, undecided = self._exiting_with(tid)
        if alive or undecided or not self.on_exit:
            # One thread ending alone (pthread_exit), or several at once while others run on.
            for t in exiting:
                self._resume(t, 0)
            for t, st in alive.items():
                self._on_status(t, st)
            return
        held = HeldAtExit(self.pid, exiting)
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        struck = [t for t in exiting if sig and self._last_signal.get(t, (0, b""))[0] == sig]
        first = struck[0] if struck else held.initiator()
        siginfo = self._last_signal[first][1] if struck else None
        event = TargetEvent("exit", tid=first, code=code, signal=sig, raw=siginfo or None, held=held)
        detail = (f"exit code {code}" if code is not None else f"killed by {_signal_name(sig or 0)}") + \
            f", ended by thread {first}"
        self._dumping += 1
        try:
            self.fire(self.pid, Firing(self.on_exit[0], float(code if code is not None else -(sig or 0)), detail,
                                       event), lambda take: take())
        finally:
            self._dumping -= 1
            for t in exiting:  # the exit goes on as if nobody had looked: the parent sees its status
                self._resume(t, 0)

    def _exiting_with(self, tid: int) -> Tuple[List[int], Dict[int, int], bool]:
        """Which threads are ending with *tid* (each in its own exit stop, held), which run on
        (interrupted to find out; their stop's status, to be handled as usual once this is done),
        and whether a thread did not stop in time (then nothing is decided and all run on: its
        interrupt is answered later, like any other stop).

        In a group exit (exit_group, a fatal signal, SIGKILL) every other thread already has its
        SIGKILL when the first exit stop is seen, and the kernel takes a group exit before any
        ptrace trap, so each reports its own exit stop; a live thread reports the interrupt."""
        exiting = [tid]
        alive: Dict[int, int] = {}
        undecided = False
        others = [t for t in self.tids if t != tid]
        for t in others:
            try:
                _ptrace(libc.PTRACE_INTERRUPT, t)
            except OSError:
                pass  # gone, or already stopped: its status says which
        for t in others:
            try:
                st = _wait(t, STOP_PATIENCE, leave_exit=self.parent and t == self.pid)
            except OSError:
                self._forget(t)
                continue
            if st is None:
                undecided = True  # asleep where no interrupt reaches (a vfork parent): not ending
            elif os.WIFEXITED(st) or os.WIFSIGNALED(st):
                self._forget(t)
            elif os.WIFSTOPPED(st) and st >> 16 == PTRACE_EVENT_EXIT:
                exiting.append(t)
            else:
                alive[t] = st
        return exiting, alive, undecided

    def _event_message(self, tid: int) -> int:
        msg = ctypes.c_ulong()
        try:
            _ptrace(PTRACE_GETEVENTMSG, tid, None, ctypes.byref(msg))
        except OSError:
            return 0
        return msg.value & 0xFFFF

    # -- the hand-over -------------------------------------------------------------------------
    def _handover(self, pending: Optional[_Redelivery], take: Callable[[], T], tid: Optional[int] = None,
                  since: Optional[float] = None) -> T:
        """Stop the process in group-stop, untraced; run create_dump beside this thread; take the
        process back and re-deliver as soon as the dump's writer has let it go (ptrace/handover.py),
        serving its stops while the dump finishes its output; return once the dump has ended.
        *since*: when the process was first held for it (its signal's stop), else now."""
        self._dumping += 1
        try:
            started = time.monotonic() if since is None else since
            try:
                stopped = self._interrupt_others(tid)
            except BaseException:
                self._resume_held()  # nothing handed over yet: let the stopped threads go as they were
                raise
            os.kill(self.pid, signal.SIGSTOP)
            self._detach_all()
            self._handed_out += 1
            job = _Job(self.pid, self._wake, started, (pending, tid, stopped))
            try:
                self._await_group_stop()
                try:
                    job.start(take)
                except DumpFailed as exc:  # its thread refused (a pids limit): said as any failed dump is,
                    job.error = exc        # once the process is given back below, with its signal
                else:
                    self._serve_job(job)
            finally:
                try:
                    if not job.taken_back:  # the dump never began, or ended without letting the process go
                        self._give_back_now(job)
                finally:
                    job.again_ready.set()  # a writer still waiting for a second hold waits no more
                    job.join()  # whatever went wrong here, the dump is not left running on its own
            if job.back_error is not None and job.error is None and isinstance(job.answer, DumpResult):
                # The dump was written and kept: failing it now would be untrue. Say what went wrong after.
                return replace(job.answer, warnings=job.answer.warnings + (  # type: ignore[return-value]
                    _not_taken_back(job.back_error, self.pid, pending),))
            if job.back_error is not None:
                raise job.back_error
            if job.error is not None:
                raise _told_released(job.error, self.pid, pending, tid)
            return job.answer  # type: ignore[return-value]
        finally:
            self._dumping -= 1

    def _serve_job(self, job: "_Job") -> None:
        """Wait for the dump running on *job*'s thread; once its writer has let the process go, take
        the process back (re-queue what was taken, SIGCONT) and serve its stops until the dump ends.

        What would start another dump waits, its thread held in its stop and its status left for the
        main loop (a watched signal, a re-queued signal not yet judged, a process exit): a dump is
        under way, and such a stop is judged once it is done, as a signal arriving during a
        hand-over always was. Everything else (the re-queued signal itself, clones, other signals)
        is handled at once, so the process runs on while the dump is flushed, checked and placed.

        A snapshot's writer asks for the process once more (job.again_asked), to have its clone reaped
        by it: it is then put back in group-stop, untraced, until the writer gives it back again; a
        process that has ended meanwhile is not held, and the writer is told so at once."""
        nap = POLL_BUSY_SECONDS
        while job.running():
            if job.back_asked and not job.taken_back:
                try:
                    self._give_back_now(job)
                except BaseException as exc:  # the process could not be taken back: said once the dump has ended
                    job.back_error = exc
                nap = POLL_BUSY_SECONDS
            if job.again_asked and job.taken_back and not self._ended:
                self._hold_again(job)
                nap = POLL_BUSY_SECONDS
            elif job.again_asked and self._ended:
                # The process has exited: there is nothing to hold, and its writer must not wait out
                # AGAIN_PATIENCE for it (its tracer then finds the process gone and says so).
                job.again_asked = False
                job.again_ok = False
                job.again_ready.set()
            if job.taken_back and not self._ended and self._poll_during(job):
                nap = POLL_BUSY_SECONDS
                continue
            self._idle(nap, job=job)
            nap = min(nap * 2, POLL_SECONDS if not job.taken_back else 0.05)

    def _give_back_now(self, job: "_Job") -> None:
        """Take the process back from the hand-over (re-queue what was taken, SIGCONT), and note when."""
        job.taken_back = True
        (pending, tid, owed), job.owed_back = job.owed_back, (None, None, {})
        try:
            self._take_back(pending, tid, owed)
        finally:
            job.hold_ended()

    def _hold_again(self, job: "_Job") -> None:
        """Hand the process over once more (a snapshot's clone to reap, ptrace/handover.held_again): every
        thread interrupted, SIGSTOP, detached, as for the dump; taken back when the writer says so."""
        job.again_asked = False
        started = time.monotonic()
        try:
            owed = self._interrupt_others(None)
        except BaseException:
            self._resume_held()
            job.again_ok = False
            job.again_ready.set()
            return
        os.kill(self.pid, signal.SIGSTOP)
        self._detach_all()
        # A stop left for after the dump was taken by the interrupt: it is owed, re-queued at the take-back.
        job.left.clear()
        job.owed_back = (None, None, owed)
        job.hold_started(started)
        job.back_asked = job.taken_back = False
        try:
            self._await_group_stop()
            job.again_ok = True
        except DumpFailed:
            job.again_ok = False  # detached all the same: the writer's tracer stops it, and says if it cannot
        job.again_ready.set()

    def _poll_during(self, job: "_Job") -> bool:
        """_poll_once while a dump is being finished: stops that would start another dump are left
        waiting (peeked at with WNOWAIT, not taken); True if a stop was handled."""
        busy = False
        for tid in list(self.tids):
            if tid in job.left:
                continue
            try:
                info = os.waitid(os.P_PID, tid, os.WEXITED | os.WSTOPPED | os.WNOHANG | os.WNOWAIT | libc.WALL)
            except ChildProcessError:
                self._forget(tid)
                continue
            if info is None or info.si_pid == 0:
                continue
            if info.si_code == os.CLD_TRAPPED and self._would_dump(tid, info.si_status):
                job.left.add(tid)
                continue
            try:
                status = _wait(tid, leave_exit=self.parent and tid == self.pid)
            except OSError:
                self._forget(tid)
                continue
            if status is not None:
                busy = True
                self._on_status(tid, status)
        return busy

    def _would_dump(self, tid: int, code: int) -> bool:
        """Whether the ptrace stop *code* (waitid's si_status: the signal, with the event above it) of
        *tid* may start a dump when handled: a watched signal, a re-queued one not judged yet, an exit."""
        event, sig = code >> 8, code & 0x7F
        if event == PTRACE_EVENT_EXIT:
            return not (len(self.tids) > 1 and _syscall_at_exit(tid) == SYS_EXIT)  # not a thread ending alone
        if event != 0:
            return False
        again = self.redeliver.get(tid)
        if again is not None and again.signo == sig:
            return again.fresh
        return any(sig in t.signals for t in self.triggers)

    def _interrupt_others(self, keep: Optional[int]) -> Dict[int, _Redelivery]:
        """Every thread but *keep* into a ptrace-stop; returns signals some were about to receive."""
        owed: Dict[int, _Redelivery] = {}
        done = {keep}
        while True:
            todo = [t for t in self.tids if t not in done]
            if not todo:
                return owed
            for t in todo:
                done.add(t)
                try:
                    _ptrace(libc.PTRACE_INTERRUPT, t)
                    status = _wait(t, STOP_PATIENCE, leave_exit=self.parent and t == self.pid)
                    for _ in range(4):
                        # Our re-queued copy still pending (the thread not yet past the last hand-over's
                        # SIGCONT): detached now, it would reach the handler with our siginfo. Run it on to it
                        # (delivering another signal it stopped for first, such as that SIGCONT).
                        again, other = self.redeliver.get(t), 0
                        if again is None or status is None or not os.WIFSTOPPED(status) \
                                or status >> 16 == PTRACE_EVENT_EXIT:
                            break
                        if status >> 16 == 0:
                            other = os.WSTOPSIG(status)
                            if other == again.signo or other in _STOP_SIGNALS:
                                break
                        if status >> 16 == PTRACE_EVENT_CLONE:
                            self._adopt_clone(t)
                        _ptrace(PTRACE_CONT, t, None, ctypes.c_void_p(other or None))
                        status = _wait(t, STOP_PATIENCE, leave_exit=self.parent and t == self.pid)
                except OSError:
                    self._forget(t)
                    continue
                if status is None:
                    raise DumpFailed(f"thread {t} of process {self.pid} did not stop", pid=self.pid)
                if not os.WIFSTOPPED(status):
                    self._forget(t)
                    continue
                event = status >> 16
                self._held[t] = os.WSTOPSIG(status) if event == 0 else 0
                if event == PTRACE_EVENT_CLONE:
                    self._adopt_clone(t)  # the new thread starts in a stop of its own: waited for next pass
                elif event == 0:  # dropped at detach, queued again afterwards with its siginfo
                    sig = os.WSTOPSIG(status)
                    earlier = self.redeliver.pop(t, None)
                    owed[t] = (earlier if earlier is not None and earlier.signo == sig
                               else _Redelivery(sig, self._get_siginfo(t), fresh=True))

    def _resume_held(self) -> None:
        """Resume the threads the hand-over stopped, each with the signal it was stopped for
        (its siginfo is still the original: nothing was taken from it yet)."""
        held, self._held = self._held, {}
        for t, sig in held.items():
            self._resume(t, sig)

    def _detach_all(self) -> None:
        self._held = {}
        for t in list(self.tids):
            try:
                _ptrace(libc.PTRACE_DETACH, t, None, None)
            except OSError:
                pass
        self.tids = []

    def _await_group_stop(self) -> None:
        deadline = time.monotonic() + STOP_PATIENCE
        while True:
            states = thread_states(self.pid)
            if not states or all(s in "TZX" for s in states.values()):
                return
            if time.monotonic() > deadline:
                raise DumpFailed(f"process {self.pid} did not stop for the dump", pid=self.pid)
            time.sleep(0.001)

    def _take_back(self, pending: Optional[_Redelivery], tid: Optional[int], owed: Dict[int, _Redelivery]) -> None:
        """Re-seize every thread, re-queue what was taken from it, and let the process continue."""
        try:
            self._seize_all()
        except BaseException as exc:
            os.kill(self.pid, signal.SIGCONT)  # whatever else fails, the process must not stay stopped
            self._ended = True
            if isinstance(exc, DumpFailed) and exc.reason == "exited":
                return  # killed while handed over: nothing to take back, no signal to deliver to it
            raise
        # Each seized thread's first report is the seize's own EVENT_STOP, in group-stop. Waited for all
        # together: a process killed since the seize reports exits instead, and its leader's only once
        # the other threads are collected, so a wait on it alone would run out its patience.
        waiting = list(self.tids)
        deadline = time.monotonic() + STOP_PATIENCE
        looked = time.monotonic()  # when the process was last checked for an exit (a read per thread: not every ms)
        while waiting:
            for t in list(waiting):
                try:
                    status = _wait(t, leave_exit=self.parent and t == self.pid)
                except OSError:  # ECHILD: gone and reaped
                    status = 0
                if status is None:
                    continue
                waiting.remove(t)
                if os.WIFSTOPPED(status) and (status >> 16) == libc.PTRACE_EVENT_STOP:
                    self._listen(t)
                elif not os.WIFSTOPPED(status):
                    self._forget(t)
            if not waiting or time.monotonic() > deadline:
                break
            if time.monotonic() - looked > 0.02:
                if self._has_exited():
                    self._ended = True  # killed: what is left are exits, collected by the main loop or the release
                    break
                looked = time.monotonic()
            time.sleep(0.001)
        if pending is not None and tid is not None and tid in self.tids:
            self.redeliver[tid] = pending
            libc.tgkill(self.pid, tid, pending.signo)
        for t, again in owed.items():
            if t in self.tids:
                self.redeliver[t] = again
                libc.tgkill(self.pid, t, again.signo)
        os.kill(self.pid, signal.SIGCONT)

    # -- small steps ---------------------------------------------------------------------------
    def _resume(self, tid: int, sig: int) -> None:
        try:
            _ptrace(PTRACE_CONT, tid, None, ctypes.c_void_p(sig or None))
        except OSError:
            self._forget(tid)

    def _listen(self, tid: int) -> None:
        try:
            _ptrace(PTRACE_LISTEN, tid, None, None)
        except OSError:
            self._resume(tid, 0)

    def _get_siginfo(self, tid: int) -> bytes:
        buf = ctypes.create_string_buffer(_SIGINFO_SIZE)
        try:
            _ptrace(PTRACE_GETSIGINFO, tid, None, buf)
        except OSError:
            return b""
        return buf.raw

    def _set_siginfo(self, tid: int, info: bytes) -> None:
        if not info:
            return
        buf = ctypes.create_string_buffer(info, _SIGINFO_SIZE)
        try:
            _ptrace(PTRACE_SETSIGINFO, tid, None, buf)
        except OSError:
            pass

    def _forget(self, tid: int) -> None:
        if tid in self.tids:
            self.tids.remove(tid)
        self.redeliver.pop(tid, None)
        self._last_signal.pop(tid, None)
        if tid == self.pid or not self.tids:
            self._ended = True

    def _release_all(self) -> None:
        """Detach from every thread, leaving each as it was: a thread must be in a ptrace-stop to
        be detached, so interrupt it first; a signal it was about to receive goes with it."""
        for t in list(self.tids):
            try:
                _ptrace(libc.PTRACE_INTERRUPT, t)
            except OSError:
                continue
        deadline = time.monotonic() + STOP_PATIENCE
        pending = set(self.tids)
        while pending and time.monotonic() < deadline:
            for t in list(pending):
                try:
                    status = _wait(t, leave_exit=self.parent and t == self.pid)
                except OSError:
                    pending.discard(t)
                    continue
                if status is None:
                    continue
                if not os.WIFSTOPPED(status):
                    pending.discard(t)
                    continue
                event = status >> 16
                sig = os.WSTOPSIG(status) if event == 0 else 0
                again = self.redeliver.get(t)
                if again is not None and again.signo != sig:
                    # Our re-queued copy is still to come: detached now, it would arrive with our
                    # siginfo. Let the thread run on to it (delivering whatever comes first).
                    self._resume(t, sig)
                    continue
                if again is not None:
                    del self.redeliver[t]
                    self._set_siginfo(t, again.siginfo)
                try:
                    _ptrace(libc.PTRACE_DETACH, t, None, ctypes.c_void_p(sig or None))
                except OSError:
                    pass
                pending.discard(t)
            if pending:
                time.sleep(0.002)
        self.tids = []


class _Job:
    """A dump run for a hand-over on a thread of its own, beside the tracer thread, which must stay
    free to take the process back the moment the writer lets it go (ptrace/handover.py) and to serve
    its stops while the dump is flushed, checked and placed."""

    def __init__(self, pid: int, wake: Callable[[], None], held_since: float,
                 owed_back: Tuple[Optional[_Redelivery], Optional[int], Dict[int, _Redelivery]]) -> None:
        self.pid = pid
        self._wake = wake
        #: What the next take-back re-queues: the signal that started the hand-over (and its thread),
        #: and signals the other threads were stopped on their way to.
        self.owed_back = owed_back
        #: The holds of this dump: the first from the signal's stop, a second for a snapshot's reaping.
        self._hold_start = held_since
        self._held_total = 0.0
        self._released = threading.Event()
        #: The writer wants the process held once more (handover.held_again); set when it is.
        self.again_asked = False
        self.again_ok = False
        self.again_ready = threading.Event()
        #: The writer has let the process go: the tracer thread takes it back.
        self.back_asked = False
        self.taken_back = False
        self.back_error: Optional[BaseException] = None
        #: Threads whose stop waits for the dump to end (it would start another dump).
        self.left: Set[int] = set()
        self.answer: object = None
        self.error: Optional[BaseException] = None
        self._thread: Optional[threading.Thread] = None
        self._done = False

    def start(self, take: Callable[[], object]) -> None:
        thread = threading.Thread(target=self._body, args=(take,), name=f"dumplib-handover-{self.pid}", daemon=True)
        start_thread(thread, f"the thread that dumps process {self.pid}")
        self._thread = thread  # join() joins it: kept once started

    def running(self) -> bool:
        return self._thread is not None and not self._done and self._thread.is_alive()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def give_back(self) -> None:
        """The writer's word (from the dump's thread): the process runs again as far as it is concerned."""
        if not self.back_asked:
            self.back_asked = True
            self._wake()

    def hold_again(self) -> bool:
        """The writer's request (from the dump's thread): the process back in group-stop, untraced."""
        if not self.back_asked:
            return True  # never given back: the hand-over holds it still
        self.again_ready.clear()
        self.again_asked = True
        self._wake()
        deadline = time.monotonic() + AGAIN_PATIENCE
        # Polled, not Event.wait(): see SignalWatcher.stop.
        while not self.again_ready.is_set() and time.monotonic() < deadline:
            time.sleep(0.001)
        return self.again_ready.is_set() and self.again_ok

    def hold_started(self, at: float) -> None:
        self._hold_start = at
        self._released.clear()

    def hold_ended(self) -> None:
        """The tracer thread has sent SIGCONT: the hold that began at _hold_start is over."""
        if not self._released.is_set():
            self._held_total += time.monotonic() - self._hold_start
            self._released.set()

    def held_seconds(self) -> Optional[float]:
        """Every hold of this dump summed, from the signal's stop to the watcher's SIGCONT (the writer's
        own stop is only part of it: the hand-over and the plan come before, the take-back after).
        Waits (bounded) for the take-back the writer has just asked for; past that, the hold so far."""
        deadline = time.monotonic() + AGAIN_PATIENCE
        while not self._released.is_set() and time.monotonic() < deadline:
            time.sleep(0.0005)
        if self._released.is_set():
            return self._held_total
        return self._held_total + time.monotonic() - self._hold_start

    def _body(self, take: Callable[[], object]) -> None:
        try:
            with handed_over(self.pid, self):
                self.answer = take()
        except BaseException as exc:  # raised on the tracer thread, in _handover
            self.error = exc
        finally:
            self._done = True
            self._wake()


def _told_released(exc: BaseException, pid: int, pending: Optional[_Redelivery], tid: Optional[int]) -> BaseException:
    """A failed dump's error, saying that the process held for a signal got it all the same."""
    if isinstance(exc, DumpError) and pending is not None:
        exc.message = (f"{exc.message}; process {pid} was let go and its {_signal_name(pending.signo)} delivered to"
                       f" thread {tid} as it was sent")
        exc.args = (exc.message,) + exc.args[1:]
    return exc


def _not_taken_back(exc: BaseException, pid: int, pending: Optional[_Redelivery]) -> str:
    """The warning of a dump that was kept although its process could not be taken back after it."""
    lost = f", and its {_signal_name(pending.signo)} was not delivered" if pending is not None else ""
    return f"process {pid} could not be taken back after its dump ({exc}): it was let go (SIGCONT){lost}"


def _describe_siginfo(sig: int, info: bytes, tid: int) -> str:
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = str(sig)
    if len(info) < 24:
        return f"{name} to thread {tid}"
    code = int.from_bytes(info[8:12], "little", signed=True)
    if code <= 0:  # sent by a process: si_pid, si_uid
        sender = int.from_bytes(info[16:20], "little", signed=True)
        return f"{name} to thread {tid} from pid {sender}"
    addr = int.from_bytes(info[16:24], "little")
    return f"{name} to thread {tid}, code {code}, address 0x{addr:x}"


def _syscall_at_exit(tid: int) -> Optional[int]:
    """The system call a thread in its exit stop entered (orig_rax): exit, exit_group, or the call
    a fatal signal interrupted (None: unreadable)."""
    try:
        regs = read_general(tid)
    except OSError:
        return None
    return slot(regs, ORIG_RAX, signed=True)


def _fault_address(sig: int, info: bytes) -> Optional[int]:
    """si_addr of a fault the kernel raised (si_code > 0); None for a signal a process sent."""
    if sig not in _FAULT_SIGNALS or len(info) < 24 or int.from_bytes(info[8:12], "little", signed=True) <= 0:
        return None
    return int.from_bytes(info[16:24], "little")


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


class HeldAtExit:
    """The process at its exit as the watcher's tracer thread holds it: every thread in its
    PTRACE_EVENT_EXIT stop, the address space not yet released.

    The core writer uses it where it would use ptrace/stopper.py StoppedProcess: it stops nothing and lets
    nothing go (the watcher lets the exit go on after the dump), and reads the registers from
    the calling thread, which must be the tracer: ptrace answers only the thread that seized."""

    def __init__(self, pid: int, tids: Sequence[int]) -> None:
        self.pid = pid
        self.tids = list(tids)
        self.owner = threading.current_thread()
        self.max_pause: Optional[float] = None
        self.threads: Dict[int, ThreadState] = {}
        self.stopped_at = time.monotonic()

    def holding(self, max_pause: Optional[float]) -> "HeldAtExit":
        """Itself, bounded by the dump's max_pause."""
        self.max_pause = max_pause
        return self

    def initiator(self) -> int:
        """The thread that ended the process (in exit_group, or exit as the last thread); else the
        leader if it is among them, else the first thread seen at its exit."""
        for t in self.tids:
            if _syscall_at_exit(t) in (SYS_EXIT, SYS_EXIT_GROUP):
                return t
        return self.pid if self.pid in self.tids else self.tids[0]

    def __enter__(self) -> "HeldAtExit":
        if threading.current_thread() is not self.owner:
            raise DumpFailed(f"the exit of process {self.pid} can only be dumped from the thread that holds it",
                             pid=self.pid)
        for t in self.tids:
            state = ThreadState(t)
            try:
                read_registers(state)
                state.sighold, state.sigpend = signal_sets(self.pid, t)
            except OSError:
                continue  # killed again meanwhile: it no longer waits in its exit stop
            self.threads[t] = state
        if not self.threads:
            raise DumpFailed(f"process {self.pid} finished exiting before it could be dumped", pid=self.pid,
                             reason="exited")
        return self

    def __exit__(self, *exc: object) -> None:
        """Nothing to let go: the watcher resumes every thread once the dump is done."""

    @property
    def stopped_seconds(self) -> float:
        return time.monotonic() - self.stopped_at

    def check_pause(self) -> None:
        """The process is ending, so nothing runs late for it, but its parent waits: max_pause still bounds the dump."""
        if self.max_pause is not None and self.stopped_seconds > self.max_pause:
            raise DumpFailed(f"the dump of process {self.pid} at its exit took longer than {self.max_pause:g} s"
                             " (max_pause); it was abandoned and the exit went on", pid=self.pid, reason="max-pause",
                             max_pause=self.max_pause)

    def alive(self) -> bool:
        return True  # held in the exit stops until the watcher lets them go


class LinuxEvents:
    """What watching needs on Linux (Backend.watch_events, a watching.WatchSupport): a ptrace watcher per process for
    SignalReceived and ProcessExit, and commands launched stopped before their first instruction."""

    def source(self, pid: int, triggers: Sequence[Trigger], fire: Callable) -> SignalWatcher:  # type: ignore[type-arg]
        if any(isinstance(t, ExceptionRaised) for t in triggers):
            raise InvalidArgument("ExceptionRaised is Windows only; on Linux use SignalReceived",
                                  argument="triggers", value="ExceptionRaised")
        return SignalWatcher(pid, [t for t in triggers if isinstance(t, SignalReceived)], fire,
                             on_exit=[t for t in triggers if isinstance(t, ProcessExit)])

    def launch_held(self, argv: List[str]) -> "subprocess.Popen[bytes]":
        return launch_stopped(argv)

    def let_run(self, proc: "subprocess.Popen[bytes]") -> None:
        os.kill(proc.pid, signal.SIGCONT)  # seized before its first instruction: now let it run

    def cpu_seconds(self, pid: int) -> Optional[float]:
        return None  # psutil reads /proc/PID/stat, which is right here
