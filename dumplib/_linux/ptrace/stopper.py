"""Stopping every thread of a process, and letting them go, from one short-lived tracer thread.

ptrace ties each tracee to the tracer *thread*, and when that thread ends the kernel detaches every
tracee, even one still on its way to a stop (a thread asleep in the kernel that wakes up later).
So every ptrace call is made by a dedicated thread that lives only while the target is stopped. The
caller's thread reads memory (process_vm_readv needs no tracer) and may be interrupted, blocked on a
stalled pipe or held by Ctrl-Z: the tracer still lets the target go at the deadline and ends.
PTRACE_SEIZE never sends SIGSTOP, so if the dumper dies (even by SIGKILL) the target simply runs on.
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
import threading
import time

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Protocol, Set, TypeVar, runtime_checkable
else:
    from ..._typing import Protocol, TypeVar, runtime_checkable

T = TypeVar("T")

from ..._bounded import start_thread
from ..._accel import signal  # _signal: signal's functions, without its enums' start-up
from ...errors import DumpFailed, ProcessNotFound
from ..proc.errors import permission_error, unstoppable_refusal
from ..proc.pidfiles import list_tids, parent_of, thread_state
from . import libc
from .mailbox import Mailbox, OwnerGone
from .regs import ThreadState, read_registers, signals_and_seccomp

#: How long one thread may take to reach its stop. A thread asleep in the kernel in a way no signal
#: can interrupt (a vfork parent, a read from a hung NFS or FUSE mount) never gets there, while every
#: other thread waits stopped; past this the dump is refused and the others released.
STOP_TIMEOUT = 2.0
#: Stop signals that must not freeze dumplib (and with it the target) while the target is stopped.
JOB_CONTROL_SIGNALS = (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)
#: The caller's polls of the tracer thread (its start, its end): QUICK_NAP apart for their first
#: QUICK_FOR seconds, where the answer comes within a millisecond or so and every nap's overshoot is
#: the target's stop and the command's wall time (0.4-0.6 ms of each with 0.5 ms naps throughout,
#: docs/benchmarks.md); SLOW_NAP apart after, so that a long wait (a thread slow to stop) costs few
#: wake-ups.
QUICK_NAP, QUICK_FOR, SLOW_NAP = 0.0001, 0.005, 0.0005


def _nap(since: float) -> None:
    """Sleep between two looks of a poll that began at *since* (time.monotonic())."""
    time.sleep(QUICK_NAP if time.monotonic() - since < QUICK_FOR else SLOW_NAP)


class Stopper(Protocol):
    """What the core writer uses of whatever holds the target's threads stopped: StoppedProcess,
    RemoteStoppedProcess (snapshot/remote.py) for a snapshot, HeldAtExit (signalwatch.py) at a watched exit."""

    #: The stopped threads with their registers, kept after release for the notes.
    threads: Dict[int, ThreadState]

    def __enter__(self) -> "Stopper": ...

    def __exit__(self, *exc: object) -> None: ...

    def check_pause(self) -> None:
        """Raise DumpFailed 'max-pause' once the target had to be let go before the caller was done."""

    def alive(self) -> bool:
        """Whether a thread that was stopped is still neither dead nor a zombie."""

    @property
    def stopped_seconds(self) -> float:
        """How long the target was held stopped."""


@runtime_checkable
class SnapshotHolder(Protocol):
    """A Stopper that can also clone the stopped target and hold the clone (snapshot/remote.py)."""

    threads: Dict[int, ThreadState]
    #: How long stopping every thread took: what stopping it again (to reap the clone) costs.
    seized_seconds: float
    snapshot_pid: Optional[int]
    snapshot_bytes: Optional[int]
    snapshot_warnings: List[str]

    def take_snapshot(self, syscall_at: int, *, resume: bool = False) -> int:
        """Make the stopped target clone itself; the clone's pid. *resume*: and let the target go at once
        after (resume_target then does nothing), where nothing is left to read from it stopped."""

    def resume_target(self) -> None:
        """Let the target's threads go now; the clone stays held."""


def _errno_of(exc: OSError) -> int:
    return exc.errno or 0


class StoppedProcess:
    """Context manager: every thread stopped on entry, every thread let go on exit, whatever happens.

    With *max_pause* the tracer lets the target go that many seconds after the first thread was
    stopped even if the caller is not done; check_pause() then raises in the caller.
    """

    def __init__(self, pid: int, *, max_pause: Optional[float] = None, stop_timeout: float = STOP_TIMEOUT) -> None:
        self.pid = pid
        self.max_pause = max_pause
        self.stop_timeout = stop_timeout if max_pause is None else min(stop_timeout, max_pause)
        #: A thread not stopped by then ran out max_pause, not the time a stop may take.
        self._pause_bounds_stops = max_pause is not None and max_pause < stop_timeout
        #: The threads that were stopped, with their registers (kept after release for the notes).
        self.threads: Dict[int, ThreadState] = {}
        self.stopped_at = 0.0
        self.resumed_at = 0.0
        #: How long stopping every thread and reading its registers took: what stopping it again costs.
        self.seized_seconds = 0.0
        #: Set (before any thread is let go) when max_pause ran out before the caller released.
        self.expired = False
        self._seized: Set[int] = set()
        self._skipped: Set[int] = set()  # zombie threads (a main thread that called pthread_exit)
        self._ready = threading.Event()
        self._release = threading.Event()
        #: Wakes the tracer: release, or a request from the caller (a snapshot, letting the target go).
        self._wake = threading.Event()
        self._mailbox = Mailbox(self._wake.set)
        self._target_released = False
        # What a snapshot leaves to report; set only by the stopper that takes one (snapshot/clone.py).
        #: The snapshot (a copy-on-write clone of the target, held stopped) while it lives.
        self.snapshot_pid: Optional[int] = None
        #: Bytes only the snapshot held when it was dropped: pages the target changed since, and page tables.
        self.snapshot_bytes: Optional[int] = None
        self.snapshot_warnings: List[str] = []
        #: The second, short stop in which the target reaps the snapshot (after the dump was read).
        self.reap_pause = 0.0
        self._error: Optional[BaseException] = None
        self._tracer: Optional[threading.Thread] = None
        self._job_control = JobControlDeferred()

    # -- the caller's side ----------------------------------------------------------------------------
    def __enter__(self) -> "StoppedProcess":
        try:
            # Before the tracer starts, so that it inherits the blocked job-control signals.
            self._job_control.start()
            tracer = threading.Thread(target=self._trace, name=f"dumplib-tracer-{self.pid}", daemon=True)
            start_thread(tracer, "the thread that stops the target")
            self._tracer = tracer  # release() joins it: kept once started
            # Polled, not Event.wait(): a Ctrl-C landing inside a lock wait can leave the lock in a
            # state the way out trips over ("release unlocked lock"). The tracer's waits are
            # bounded, so this is too.
            since = time.monotonic()
            while not self._ready.is_set():
                _nap(since)
            if self._error is not None:
                raise self._error
        except BaseException:
            self.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Let every thread go (at once, idempotent), drop the snapshot, then let a deferred Ctrl-Z stop dumplib."""
        self._release.set()
        self._wake.set()
        try:
            if self._tracer is not None:
                # Polled, not join(), for the same reason as in __enter__; the thread's end, not
                # Python's bookkeeping of it, is what lets the kernel detach every tracee.
                _wait_thread_gone(self._tracer.native_id, patience=RELEASE_PATIENCE)
        finally:
            self._job_control.finish()

    def check_pause(self) -> None:
        """Raise DumpFailed 'max-pause' if the tracer had to let the target go before the caller was done."""
        if self.expired:
            raise max_pause_error(self.pid, self.max_pause)

    def resume_target(self) -> None:
        """Let the target's threads go now; the snapshot stays held. The pause ends here."""
        self.ask(self._let_target_go)

    def ask(self, request: Callable[[], T]) -> T:
        """Have the tracer thread run *request* (ptrace calls must come from it); its answer or error."""
        if self._tracer is None or self._release.is_set() or self.expired:
            self.check_pause()
            raise DumpFailed(f"the tracer of process {self.pid} has already let it go", pid=self.pid)
        try:
            return self._mailbox.ask(self._tracer, request)
        except OwnerGone:
            self.check_pause()  # it let the target go at max_pause before taking the request
            raise DumpFailed(f"the tracer of process {self.pid} ended unexpectedly", pid=self.pid) from None

    @property
    def stopped_seconds(self) -> float:
        """From the first PTRACE_SEIZE to the last PTRACE_DETACH, plus a snapshot's reaping stop."""
        return (self.resumed_at or time.monotonic()) - self.stopped_at + self.reap_pause

    def alive(self) -> bool:
        """Whether a thread that was stopped is still neither dead nor a zombie."""
        return any(thread_state(self.pid, tid) not in ("", "Z", "X") for tid in self.threads)

    # -- the tracer thread ------------------------------------------------------------------------------
    def _trace(self) -> None:
        self.stopped_at = time.monotonic()
        try:
            try:
                # Signals are for the caller's threads: this thread's waits are never interrupted by them.
                signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
                self.seize_all()
                for state in self.threads.values():
                    self.read_registers(state)
                self.seized_seconds = time.monotonic() - self.stopped_at
            except BaseException as exc:  # handed to the caller, which raises it
                self._error = exc
                return
            finally:
                self._ready.set()
            self._serve()
        finally:
            self._let_target_go()
            self._after_release()

    def _serve(self) -> None:
        """Answer the caller's requests until release, or until max_pause runs out while the target is stopped."""
        while not self._release.is_set():
            left = None if self._target_released else self._pause_left()
            if not self._wake.wait(left):
                self.expired = True  # before any thread runs: the caller must see it after its last read
                return
            self._wake.clear()
            self._mailbox.serve()

    def _after_release(self) -> None:
        """Run by the tracer thread once the target's threads are let go, before it ends (a subclass
        drops what it holds besides the target: snapshot/clone.py's clone)."""

    def _let_target_go(self) -> None:
        if not self._target_released:
            self._target_released = True
            self.detach_all()
            self.resumed_at = time.monotonic()

    def _pause_left(self) -> Optional[float]:
        if self.max_pause is None:
            return None
        return max(0.0, self.stopped_at + self.max_pause - time.monotonic())

    def seize_all(self) -> None:
        """Stop every thread (from the tracer thread), each waited for at most stop_timeout."""
        # Threads may be created while we stop the others: repeat until a pass finds none new.
        while True:
            new = [t for t in list_tids(self.pid) if t not in self._seized and t not in self._skipped]
            if not new:
                break
            if self._pause_left() == 0.0:  # threads created as fast as they are stopped
                self.expired = True
                self.check_pause()
            for tid in new:
                self._seize(tid)
            self._wait_stops([t for t in new if t in self.threads])
        if not self.threads:
            raise ProcessNotFound.exited(self.pid)

    def _seize(self, tid: int) -> None:
        """PTRACE_SEIZE then PTRACE_INTERRUPT one thread; its stop is waited for with the others."""
        try:
            libc.ptrace(libc.PTRACE_SEIZE, tid, None, None)
        except OSError as exc:
            if _errno_of(exc) == errno.EPERM and thread_state(self.pid, tid) in ("Z", "X"):
                self._skipped.add(tid)  # a thread that exited (a pthread_exit'ed main thread): nothing to stop
                return
            if _errno_of(exc) == errno.EPERM:
                raise permission_error(self.pid, tid=tid) from None
            if _errno_of(exc) == errno.ESRCH:
                self._skipped.add(tid)  # that thread exited meanwhile
                return
            raise DumpFailed(f"PTRACE_SEIZE of thread {tid} failed: {exc}", pid=self.pid, errno=exc.errno) from None
        self._seized.add(tid)  # from here on, _detach_all must release it
        self.threads[tid] = ThreadState(tid)
        try:
            libc.ptrace(libc.PTRACE_INTERRUPT, tid, None, None)
        except OSError:
            self._forget(tid)  # it exited between the two calls

    def _wait_stops(self, tids: List[int]) -> None:
        """Wait, at most stop_timeout, until each of *tids* is in its ptrace stop or gone."""
        deadline = time.monotonic() + self.stop_timeout
        waiting = list(tids)
        nap = 0.0001
        while waiting:
            waiting = [tid for tid in waiting if not self._poll_stop(tid)]
            if not waiting:
                return
            if time.monotonic() >= deadline:
                if self._pause_bounds_stops:
                    self.expired = True
                    self.check_pause()
                raise unstoppable_refusal(self.pid, waiting, self.stop_timeout)
            time.sleep(nap)
            nap = min(nap * 2, 0.005)

    def _poll_stop(self, tid: int) -> bool:
        """True once *tid* has stopped (or exited); never blocks."""
        status = ctypes.c_int()
        try:
            got = libc.waitpid(tid, ctypes.byref(status), libc.WALL | libc.WNOHANG)
        except OSError as exc:
            if _errno_of(exc) == errno.EINTR:
                return False  # interrupted is not exited: ask again
            self._forget(tid)  # ECHILD: it is gone
            return True
        if got == 0:
            return False
        value = status.value
        if os.WIFEXITED(value) or os.WIFSIGNALED(value):
            self._forget(tid)
            return True
        if os.WIFSTOPPED(value):
            sig = os.WSTOPSIG(value)
            if not ((value >> 16) == libc.PTRACE_EVENT_STOP or sig == signal.SIGTRAP):
                self.threads[tid].pending_signal = sig  # a signal-delivery stop: hand it back at detach
        return True

    def _forget(self, tid: int) -> None:
        self.threads.pop(tid, None)
        self._skipped.add(tid)

    def read_registers(self, state: ThreadState) -> None:
        """Registers and signal state of one of the stopped threads (from the tracer thread)."""
        read_registers(state)
        state.sighold, state.sigpend, state.seccomp = signals_and_seccomp(self.pid, state.tid)

    def detach_all(self) -> None:
        """Let every seized thread go, each with the signal it stopped for; reap those that died."""
        dead = []
        for tid in sorted(self._seized):
            state = self.threads.get(tid)
            signo = state.pending_signal if state else 0
            try:
                libc.ptrace(libc.PTRACE_DETACH, tid, None, ctypes.c_void_p(signo or None))
            except OSError:
                # Not in a stop: killed (a zombie only its tracer can reap), or not stopped yet
                # (detached by the kernel when this thread ends, the very next thing it does).
                if thread_state(self.pid, tid) in ("", "Z", "X"):
                    dead.append(tid)
        self._seized.clear()
        if self.pid in dead and parent_of(self.pid) == os.getpid():
            # Our own child (a library caller dumping a process it started): its exit status is the
            # code that started it's, and reaping the leader here would take it (Popen.wait() then
            # says 0). The kernel hands the leader to us as its parent when this tracer thread ends.
            dead.remove(self.pid)
        if dead:
            reap(dead)


class JobControlDeferred:
    """Ctrl-Z (SIGTSTP) and background-terminal stops (SIGTTIN, SIGTTOU) wait until the target runs.

    A stop signal freezes every thread of dumplib, the tracer with them, and the target stays stopped
    until `fg`. Blocking them in the calling thread covers that thread and the tracer (it inherits the
    mask); a handler, which only the main thread may install, catches them wherever else the kernel
    delivers them (any thread of ours that does not block them). finish() puts both back, so the
    signals still pending are delivered and those caught are raised again: dumplib then stops as asked,
    with the target already running. From another thread dumplib cannot keep a stop signal delivered
    to the caller's other threads from stopping the whole process.
    """

    def __init__(self) -> None:
        self._caught: List[int] = []
        self._old_mask: Optional[Set[int]] = None
        self._old_handlers: Dict[int, object] = {}

    def start(self) -> None:
        self._old_mask = set(signal.pthread_sigmask(signal.SIG_BLOCK, JOB_CONTROL_SIGNALS))
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in JOB_CONTROL_SIGNALS:
            if signal.getsignal(sig) in (signal.SIG_IGN, None):  # ignored, or set outside Python: leave it
                continue
            self._old_handlers[sig] = signal.signal(sig, self._catch)

    def _catch(self, signum: int, frame: object) -> None:
        self._caught.append(signum)

    def finish(self) -> None:
        if self._old_mask is None:
            return
        pending = set(signal.sigpending()) & set(JOB_CONTROL_SIGNALS)
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
        self._old_handlers = {}
        signal.pthread_sigmask(signal.SIG_SETMASK, self._old_mask)  # what is pending arrives now
        self._old_mask = None
        for sig in dict.fromkeys(self._caught):
            if sig not in pending:
                os.kill(os.getpid(), sig)
        self._caught = []


#: Longest the caller waits for the tracer thread to end once told to let go: it detaches at once,
#: unless it is in the middle of a bounded wait for a thread to stop (STOP_TIMEOUT).
RELEASE_PATIENCE = 30.0


def _wait_thread_gone(tid: Optional[int], patience: float = 2.0) -> None:
    """Wait until the tracer thread has left the kernel, not only Python: join() returns a moment
    before the thread ends, and the kernel detaches a tracee it never reached a stop only then."""
    since = time.monotonic()
    deadline = since + patience
    while tid is not None and os.path.exists(f"/proc/self/task/{tid}") and time.monotonic() < deadline:
        _nap(since)


def max_pause_error(pid: int, max_pause: Optional[float]) -> DumpFailed:
    """The target was let go at max_pause before the dump was complete."""
    return DumpFailed.max_pause_exceeded(
        pid, max_pause, "stopped",
        "Either the output was too slow (a stalled reader of '-', a slow or network volume: write to a local"
        " file) or reading the target's memory was (a loaded host, a large target: raise --max-pause, or take"
        " a --snapshot, which stops it only while one is taken)")


def reap(tids: List[int], patience: float = 2.0) -> None:
    """Collect tracees that died while stopped (SIGKILL mid-dump).

    A killed tracee stays a zombie until its tracer waits for it, and the process's own parent
    cannot reap it until then; a library user's long-lived process must not keep them.
    """
    status = ctypes.c_int()
    deadline = time.monotonic() + patience
    pending = set(tids)
    while pending and time.monotonic() < deadline:
        for tid in list(pending):
            try:
                if libc.waitpid(tid, ctypes.byref(status), libc.WALL | libc.WNOHANG) == tid:
                    pending.discard(tid)
            except OSError as exc:
                if _errno_of(exc) != errno.EINTR:
                    pending.discard(tid)  # ECHILD: not ours to reap (alive and detached, or reaped)
        if pending:
            time.sleep(0.01)


