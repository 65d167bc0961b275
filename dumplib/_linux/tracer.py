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

assert sys.platform.startswith("linux")  # Linux only (and mypy checks this module only there)

import ctypes
import errno
import os
import signal
import threading
import time
from typing import Callable, Dict, List, Optional, Set, Tuple

from ..errors import AccessDenied, DumpFailed, ProcessNotFound, TargetRefused
from . import libc

_REGS_SIZE = 27 * 8  # struct user_regs_struct on x86_64
_FPREGS_SIZE = 512  # FXSAVE area
_XSTATE_MAX = 1 << 14
#: How long one thread may take to reach its stop. A thread asleep in the kernel in a way no signal
#: can interrupt (a vfork parent, a read from a hung NFS or FUSE mount) never gets there, while every
#: other thread waits stopped; past this the dump is refused and the others released.
STOP_TIMEOUT = 2.0
#: Stop signals that must not freeze dumplib (and with it the target) while the target is stopped.
JOB_CONTROL_SIGNALS = (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)


class ThreadState:
    """Registers of one stopped thread, as PTRACE_GETREGSET returns them."""

    def __init__(self, tid: int) -> None:
        self.tid = tid
        self.regs = b""
        self.fpregs = b""
        self.xstate: Optional[bytes] = None
        #: A signal the thread was about to receive when it stopped; re-injected at detach.
        self.pending_signal = 0
        #: Its blocked and pending (thread-private) signal sets, as the kernel's core records them.
        self.sighold = 0
        self.sigpend = 0
        #: Its seccomp mode ("0" none, "1" strict, "2" filter), from the same status read as sigpend.
        self.seccomp = "0"

    @property
    def stack_pointer(self) -> int:
        return int.from_bytes(self.regs[19 * 8 : 20 * 8], "little")  # rsp is the 20th register

    @property
    def thread_pointer(self) -> int:
        """fs_base, where x86-64 threads keep their thread control block (TLS is found from it)."""
        return int.from_bytes(self.regs[21 * 8 : 22 * 8], "little")


def list_tids(pid: int) -> List[int]:
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        raise ProcessNotFound.exited(pid) from None


def thread_state(pid: int, tid: int) -> str:
    """The one-letter scheduler state of a thread ('' when it is gone)."""
    try:
        with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0].decode("ascii", "replace")
    except (OSError, IndexError):
        return ""


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
        self._request: Optional[Callable[[], object]] = None
        self._answer: Tuple[object, Optional[BaseException]] = (None, None)
        self._answered = threading.Event()
        self._target_released = False
        #: The snapshot (a copy-on-write clone of the target, held stopped) while it lives.
        self.snapshot_pid: Optional[int] = None
        #: The same clone's pid as the target's pid namespace numbers it (what clone() returned, and what
        #: the target's wait4() needs): in a container it differs from snapshot_pid.
        self._snapshot_local_pid = 0
        #: Bytes only the snapshot held when it was dropped: pages the target changed since, and page tables.
        self.snapshot_bytes: Optional[int] = None
        self.snapshot_warnings: List[str] = []
        self._syscall_at = 0
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
            self._tracer = threading.Thread(target=self._trace, name=f"dumplib-tracer-{self.pid}", daemon=True)
            self._tracer.start()
            # Polled, not Event.wait(): a Ctrl-C landing inside a lock wait can leave the lock in a
            # state the way out trips over ("release unlocked lock"). The tracer's waits are
            # bounded, so this is too.
            while not self._ready.is_set():
                time.sleep(0.0005)
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

    def take_snapshot(self, syscall_at: int) -> int:
        """Make the stopped target clone itself and return the clone's pid.

        The clone is a copy-on-write image of the process at this instant that never runs: the
        tracer holds it stopped (PTRACE_O_EXITKILL: killed if dumplib dies) until release, then
        kills it and has the target reap it. inject.InjectionFailed: no clone exists, and the target
        is exactly as it was (still stopped)."""
        return int(self._ask(lambda: self._snapshot(syscall_at)))  # type: ignore[call-overload]

    def resume_target(self) -> None:
        """Let the target's threads go now; the snapshot stays held. The pause ends here."""
        self._ask(self._let_target_go)

    def _ask(self, request: Callable[[], object]) -> object:
        """Have the tracer thread run *request* (ptrace calls must come from it); its answer or error."""
        if self._tracer is None or self._release.is_set() or self.expired:
            self.check_pause()
            raise DumpFailed(f"the tracer of process {self.pid} has already let it go", pid=self.pid)
        self._answered.clear()
        self._request = request
        self._wake.set()
        while not self._answered.is_set():  # polled: see __enter__
            if not self._tracer.is_alive():
                self.check_pause()  # it let the target go at max_pause before taking the request
                raise DumpFailed(f"the tracer of process {self.pid} ended unexpectedly", pid=self.pid)
            time.sleep(0.0002)
        answer, error = self._answer
        if error is not None:
            raise error
        return answer

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
                self._seize_all()
                for state in self.threads.values():
                    self._read_registers(state)
                self.seized_seconds = time.monotonic() - self.stopped_at
            except BaseException as exc:  # handed to the caller, which raises it
                self._error = exc
                return
            finally:
                self._ready.set()
            self._serve()
        finally:
            self._let_target_go()
            self._drop_snapshot()

    def _serve(self) -> None:
        """Answer the caller's requests until release, or until max_pause runs out while the target is stopped."""
        while not self._release.is_set():
            left = None if self._target_released else self._pause_left()
            if not self._wake.wait(left):
                self.expired = True  # before any thread runs: the caller must see it after its last read
                return
            self._wake.clear()
            request, self._request = self._request, None
            if request is not None:
                try:
                    self._answer = (request(), None)
                except BaseException as exc:  # handed to the caller, which raises it
                    self._answer = (None, exc)
                self._answered.set()

    def _let_target_go(self) -> None:
        if not self._target_released:
            self._target_released = True
            self._detach_all()
            self.resumed_at = time.monotonic()

    def _snapshot(self, syscall_at: int) -> int:
        from . import inject

        if self.snapshot_pid is not None:
            raise inject.InjectionFailed("a snapshot is already held")
        state = self._injectable_thread()
        self._syscall_at = syscall_at
        if read_status(self.pid, state.tid).get("Seccomp") == "2":
            from . import seccomp

            # The reap's wait4 is checked now too (with a stand-in pid), so no clone is made that
            # the target could not be made to reap.
            why = seccomp.why_not(state.tid, [(inject.NR_CLONE, inject.CLONE_ARGS),
                                              (inject.NR_WAIT4, (1 << 22, 0, libc.WALL | inject.WNOHANG, 0))],
                                  syscall_at)
            if why:
                raise inject.InjectionFailed(why)
        injector = inject.Injector(state.tid, state.regs, syscall_at)
        children: List[int] = []

        def hold(child: int) -> None:
            children.append(child)
            self.snapshot_pid = child  # from here on, _drop_snapshot kills and reaps it
            if inject.wait_child_stop(child):
                try:
                    libc.ptrace(libc.PTRACE_SETOPTIONS, child, None, ctypes.c_void_p(libc.PTRACE_O_EXITKILL))
                except OSError:
                    pass  # it died: the caller finds no snapshot alive and fails the dump

        # clone() copies the page tables: about 0.01 s per GiB resident here; allow ten times that.
        rss_gib = int(read_status(self.pid).get("VmRSS", "0 kB").split()[0] or 0) / (1 << 20)
        result = injector.call(inject.NR_CLONE, *inject.CLONE_ARGS, on_clone=hold,
                               timeout=inject.STEP_TIMEOUT + 0.1 * rss_gib)
        self._snapshot_local_pid = max(result, 0)
        if result < 0 or not children or _pid_in_namespace_of(children[0], state.tid) != result:
            self._drop_snapshot()
            why = os.strerror(-result) if result < 0 else f"it returned {result}"
            raise inject.InjectionFailed(f"clone() in thread {state.tid} failed: {why}")
        return children[0]

    def _injectable_thread(self) -> ThreadState:
        """A thread to run the injected call: none with a signal to hand back (a signal handed back at a
        later stop is lost), none inside a restartable sequence (inject.outside_rseq); the leader first."""
        from . import inject

        usable = [t for t in self.threads.values() if not t.pending_signal and len(t.regs) == inject.REGS_SIZE
                  and inject.outside_rseq(t.tid, t.regs)]
        if not usable:
            raise inject.InjectionFailed("every thread was on its way to a signal or inside a restartable sequence")
        usable.sort(key=lambda t: (t.tid != self.pid, t.tid))
        return usable[0]

    def _drop_snapshot(self) -> None:
        """Kill the snapshot and have the target reap it, with every thread of the target stopped.

        The clone is the target's child. Killed, it is first reported to its tracer (us), and only
        once we have collected it does it become a zombie the target could see: with `waitpid(-1,
        __WALL)` a target would reap a pid it never made. So the clone is killed and left to free its
        memory (tens of ms for GiB of page tables) while the target runs, then the target is stopped
        again (if it runs), the clone collected, one target thread made to wait4() it, and only then
        is the target let go: it never sees the clone. (Left alone it would stay a zombie.)"""
        child = self.snapshot_pid
        if child is None:
            return
        self.snapshot_pid = None
        self.snapshot_bytes = _private_bytes(child)
        pause: Optional[StoppedProcess] = None
        threads: Dict[int, ThreadState] = self.threads
        why: Optional[str] = None
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _wait_zombie(child)
        started = time.monotonic()
        try:
            if self._target_released:
                # The usual patience, not max_pause's: a 10 ms max_pause left the clone a zombie for good
                # whenever the running target took longer than that to stop again (a loaded machine).
                pause = StoppedProcess(self.pid)
                try:
                    pause._seize_all()
                    # Registers of the few threads reap_in may use, not of all: with thousands of
                    # threads, reading each one's would lengthen this second stop by seconds.
                    threads = {tid: pause.threads[tid] for tid in _reap_candidates(self.pid, pause.threads)}
                    for state in threads.values():
                        pause._read_registers(state)
                except ProcessNotFound:  # it exited: its children, the clone too, went to a reaper
                    threads = {}
                except BaseException as exc:  # a thread that will not stop: reap without the guarantee
                    threads, why = {}, f"the target could not be stopped again to reap it ({exc})"
            _reap([child])  # as its tracer: from here it is the (stopped) target's zombie
            from .snapshot import find_syscall, reap_in

            # Once the target has run, the instruction used for the clone may be gone: an execve
            # maps a new [vdso] elsewhere, and a wait4 run at the old address faults (with every
            # signal blocked, the kernel then resets the target's SIGSEGV handler and kills it).
            # Read through a live thread: a leader that called pthread_exit has an empty maps file.
            at = self._syscall_at if pause is None else find_syscall(min(threads)) if threads else None
            if threads and at is None:
                why = (f"the snapshot (process {child}) is left as a zombie child of process {self.pid}: no system"
                       " call instruction was found in it to make it reap the snapshot")
            elif threads and at is not None:
                why = reap_in(self.pid, child, self._snapshot_local_pid, at, threads) or None
        finally:
            if pause is not None:
                pause._detach_all()
                self.reap_pause = time.monotonic() - started
        if why:
            self.snapshot_warnings.append(why)


    def _pause_left(self) -> Optional[float]:
        if self.max_pause is None:
            return None
        return max(0.0, self.stopped_at + self.max_pause - time.monotonic())

    def _seize_all(self) -> None:
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
            got = libc.waitpid(tid, ctypes.byref(status), libc.WALL | os.WNOHANG)
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

    def _read_registers(self, state: ThreadState) -> None:
        state.regs = _getregset(state.tid, libc.NT_PRSTATUS, _REGS_SIZE)
        state.sighold, state.sigpend, state.seccomp = _signal_sets_and_seccomp(self.pid, state.tid)
        state.fpregs = _getregset(state.tid, libc.NT_PRFPREG, _FPREGS_SIZE)
        try:
            state.xstate = _getregset(state.tid, libc.NT_X86_XSTATE, _XSTATE_MAX)
        except OSError:
            state.xstate = None  # no XSAVE on this CPU

    def _detach_all(self) -> None:
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
        if dead:
            _reap(dead)


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
    deadline = time.monotonic() + patience
    while tid is not None and os.path.exists(f"/proc/self/task/{tid}") and time.monotonic() < deadline:
        time.sleep(0.0005)


def signal_sets(pid: int, tid: int) -> Tuple[int, int]:
    """(blocked, pending) signal sets of stopped thread *tid* (we are its tracer), as a core records them:
    the mask from PTRACE_GETSIGMASK, the thread's own pending set (SigPnd) from /proc."""
    blocked, pending, _ = _signal_sets_and_seccomp(pid, tid)
    return blocked, pending


def _signal_sets_and_seccomp(pid: int, tid: int) -> Tuple[int, int, str]:
    """signal_sets, and the thread's Seccomp mode from the same status read (one /proc read per thread:
    with thousands of threads each read is stop time)."""
    mask = ctypes.c_uint64()
    try:
        libc.ptrace(libc.PTRACE_GETSIGMASK, tid, ctypes.c_void_p(8), ctypes.byref(mask))
    except OSError:
        pass
    status = read_status(pid, tid)
    try:
        pending = int(status.get("SigPnd", "0") or "0", 16)
    except ValueError:
        pending = 0
    return mask.value, pending, status.get("Seccomp", "0")


def max_pause_error(pid: int, max_pause: Optional[float]) -> DumpFailed:
    """The target was let go at max_pause before the dump was complete."""
    return DumpFailed(
        f"process {pid} was let go after {max_pause or 0:g} s stopped (max_pause) before its dump was complete,"
        " so the dump was abandoned and nothing was kept. The output was too slow (a stalled reader of '-'?);"
        " write to a local file, or allow a longer pause (--max-pause)",
        pid=pid, reason="max-pause", max_pause=max_pause)


def _private_bytes(pid: int) -> Optional[int]:
    """Memory only process *pid* holds: its private pages (smaps_rollup) and its page tables (VmPTE)."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith((b"Private_Clean:", b"Private_Dirty:")):
                    total += int(line.split()[1]) * 1024
        total += int(read_status(pid).get("VmPTE", "0 kB").split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return total


#: Threads whose registers the reaping stop reads: reap_in gives up after three failed tries.
_REAP_CANDIDATES = 4


def _reap_candidates(pid: int, threads: Dict[int, ThreadState]) -> List[int]:
    """The leader first (as reap_in orders them), then the lowest tids; without a pending signal."""
    ordered = sorted(threads, key=lambda tid: (tid != pid, tid))
    return [tid for tid in ordered if not threads[tid].pending_signal][:_REAP_CANDIDATES]


def _wait_zombie(pid: int, patience: float = 2.0) -> None:
    """Wait (bounded) until killed process *pid*, our tracee, has exited and freed its memory: a zombie
    (only its tracer can see it as one), or gone."""
    deadline = time.monotonic() + patience
    while thread_state(pid, pid) not in ("", "Z", "X") and time.monotonic() < deadline:
        time.sleep(0.0005)


def _pid_in_namespace_of(pid: int, other: int) -> Optional[int]:
    """*pid*'s number in the pid namespace process *other* lives in (NSpid lists it from ours inwards,
    one entry per level); *pid* itself where the kernel does not say."""
    mine, theirs = read_status(pid).get("NSpid", "").split(), read_status(other).get("NSpid", "").split()
    if not mine or not theirs:
        return pid
    level = len(theirs) - 1
    return int(mine[level]) if level < len(mine) else None


def _reap(tids: List[int], patience: float = 2.0) -> None:
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
                if libc.waitpid(tid, ctypes.byref(status), libc.WALL | os.WNOHANG) == tid:
                    pending.discard(tid)
            except OSError as exc:
                if _errno_of(exc) != errno.EINTR:
                    pending.discard(tid)  # ECHILD: not ours to reap (alive and detached, or reaped)
        if pending:
            time.sleep(0.01)


def _getregset(tid: int, note_type: int, size: int) -> bytes:
    buf = ctypes.create_string_buffer(size)
    iov = libc.iovec(ctypes.cast(buf, ctypes.c_void_p), size)
    libc.ptrace(libc.PTRACE_GETREGSET, tid, ctypes.c_void_p(note_type), ctypes.byref(iov))
    return buf.raw[: iov.iov_len]


def unstoppable_refusal(pid: int, tids: List[int], timeout: float) -> TargetRefused:
    """The refusal for threads that did not reach their stop: which, in what state, waiting where."""
    tid = tids[0]
    status = read_status(pid, tid)
    state = status.get("State", "?")
    wchan = _read_small_text(f"/proc/{pid}/task/{tid}/wchan")
    where = f" in the kernel at {wchan}" if wchan and wchan != "0" else " in the kernel"
    others = f" (and {len(tids) - 1} more)" if len(tids) > 1 else ""
    # The freezer's wait shows as __refrigerator on most kernels, as the call it froze in on others.
    frozen = frozen_cgroup(pid)
    if frozen or "refrigerator" in wchan:
        thaw = ("thaw its cgroup" if not frozen else f"echo THAWED > {frozen}/freezer.state"
                if os.path.exists(os.path.join(frozen, "freezer.state")) else f"echo 0 > {frozen}/cgroup.freeze")
        return TargetRefused(
            f"process {pid} is frozen by the cgroup freezer (thread {tid}{others} waits in the kernel at {wchan}"
            f"{', cgroup ' + frozen if frozen else ''}): a frozen task takes no signal and no"
            f" ptrace stop until it is thawed. Nothing was written and its threads are as they were; thaw it"
            f" ({thaw}, `docker unpause`, `systemctl thaw`) and try again",
            pid=pid, reason="thread-not-stopping", tid=tid, tids=list(tids), state=state, wchan=wchan,
            cgroup=frozen,
        )
    return TargetRefused(
        f"thread {tid}{others} of process {pid} did not stop within {timeout:g} s: it is in state {state}, waiting"
        f"{where}, where no signal or ptrace stop reaches it (a vfork parent waiting for its child, a read from"
        f" a hung NFS or FUSE mount). Its other threads were let go at once and nothing was written; try again"
        f" once it is out of that call (/proc/{pid}/task/{tid}/stack shows where it waits)",
        pid=pid, reason="thread-not-stopping", tid=tid, tids=list(tids), state=state, wchan=wchan,
    )


def frozen_cgroup(pid: int) -> str:
    """The frozen cgroup directory holding *pid*: cgroup v2 (``cgroup.freeze`` 1 there or in a parent)
    or v1's freezer (``freezer.state`` not THAWED); ``""`` when none is (or it cannot be read)."""
    try:
        with open(f"/proc/{pid}/cgroup", "rb") as f:
            groups = f.read(1 << 16).decode("utf-8", "backslashreplace").splitlines()
        with open("/proc/self/mounts", "rb") as f:
            mounts = [line.split() for line in f.read(1 << 20).decode("utf-8", "backslashreplace").splitlines()]
    except OSError:
        return ""
    frozen: Tuple[str, ...]
    for line in groups:
        _, controllers, relative = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":
            base, flag, frozen = _mount_of(mounts, "cgroup2", None), "cgroup.freeze", ("1",)
        elif "freezer" in controllers.split(","):
            base, flag, frozen = _mount_of(mounts, "cgroup", "freezer"), "freezer.state", ("FROZEN", "FREEZING")
        else:
            continue
        if base is None:
            continue
        path = os.path.normpath(base + "/" + relative.strip("/"))
        while path.startswith(base):
            if _read_small_text(os.path.join(path, flag)) in frozen:
                return path
            if path == base:
                break
            path = os.path.dirname(path)
    return ""


def _mount_of(mounts: List[List[str]], fstype: str, option: Optional[str]) -> Optional[str]:
    """Where a cgroup file system is mounted (of type *fstype*, with *option* among its options)."""
    for fields in mounts:
        if len(fields) >= 4 and fields[2] == fstype and (option is None or option in fields[3].split(",")):
            return fields[1]
    return None


def _read_small_text(path: str) -> str:
    """A short kernel-written /proc value, undecodable bytes escaped."""
    try:
        with open(path, "rb") as f:
            return f.read(256).decode("ascii", "backslashreplace").strip()
    except OSError:
        return ""


def permission_error(pid: int, action: str = "attach to", tid: Optional[int] = None) -> BaseException:
    """Explain why the kernel refused access (ptrace, or /proc files guarded by the same rules):
    a tracer, another user, a non-dumpable process, Yama, or a missing capability."""
    status = read_status(pid, tid)
    tracer = tracer_process(pid, tid)
    if tracer and tracer != os.getpid() and action == "attach to":
        return traced_refusal(pid, tracer, tid)
    reasons = []
    uid = int(status.get("Uid", "0").split()[0]) if status.get("Uid") else None
    if uid is not None and uid != os.geteuid():
        reasons.append(f"it belongs to uid {uid}, not to this user (uid {os.geteuid()})")
    elif uid is not None and _proc_owner(pid) == 0 != uid:
        # The kernel hands the files in /proc/PID to root when a process is not dumpable.
        reasons.append("it is not dumpable (it called prctl(PR_SET_DUMPABLE, 0) or changed its credentials,"
                       " e.g. a setuid program), so only a process with CAP_SYS_PTRACE may read it")
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            scope = int(f.read())
        if scope >= 1:
            reasons.append(f"kernel.yama.ptrace_scope is {scope} (1 allows only descendants, 2 only CAP_SYS_PTRACE, 3 nobody)")
    except (OSError, ValueError):
        pass
    if not _has_cap_sys_ptrace():
        reasons.append("this process lacks CAP_SYS_PTRACE (run as root, or grant the capability)")
    why = "; ".join(reasons) or "the kernel refused ptrace (a security module may forbid it)"
    return AccessDenied(f"cannot {action} process {pid}: {why}", pid=pid, code=errno.EPERM)


def _proc_owner(pid: int) -> Optional[int]:
    try:
        return os.stat(f"/proc/{pid}/status").st_uid
    except OSError:
        return None


def foreign_tracer(pid: int) -> Optional[Tuple[int, int]]:
    """(thread id, tracer pid) of the first thread of *pid* traced by another process, if any.

    A tracer may hold a single thread (`strace -p TID`), so every thread is checked, before anything
    is stopped: once dumplib holds some threads, the leader's TracerPid would name dumplib itself.
    """
    for tid in _tids_or_none(pid):
        tracer = tracer_process(pid, tid)
        if tracer and tracer != os.getpid():
            return tid, tracer
    return None


def tracer_process(pid: int, tid: Optional[int] = None) -> int:
    """The process tracing a thread (0: none). TracerPid names the tracer *thread*; this is its process."""
    tracer = int(read_status(pid, tid).get("TracerPid", "0") or 0)
    if not tracer:
        return 0
    return int(read_status(tracer).get("Tgid", tracer) or tracer)


def _tids_or_none(pid: int) -> List[int]:
    try:
        return list_tids(pid)
    except ProcessNotFound:
        return []


def traced_refusal(pid: int, tracer: int, tid: Optional[int] = None) -> TargetRefused:
    try:
        with open(f"/proc/{tracer}/comm", "rb") as f:
            name = f.read().decode("utf-8", "backslashreplace").strip()
    except OSError:
        name = "?"
    who = f"process {pid}" if tid is None or tid == pid else f"thread {tid} of process {pid}"
    return TargetRefused(
        f"{who} is already being traced by process {tracer} ({name}); a thread has one tracer"
        f" at a time. Detach that debugger first, or take the dump from it (gdb: `gcore`)",
        pid=pid,
        reason="traced",
        tracer_pid=tracer,
        tid=tid if tid is not None else pid,
    )


def read_status(pid: int, tid: Optional[int] = None) -> Dict[str, str]:
    """/proc/PID/status (or one thread's) as a dict; empty when the process is gone."""
    out: Dict[str, str] = {}
    path = f"/proc/{pid}/status" if tid is None else f"/proc/{pid}/task/{tid}/status"
    try:
        with open(path, "rb") as f:
            for line in f:
                key, _, value = line.decode("utf-8", "backslashreplace").partition(":")
                out[key] = value.strip()
    except OSError:
        pass
    return out


def _has_cap_sys_ptrace() -> bool:
    caps = read_status(os.getpid()).get("CapEff", "0")
    return bool(int(caps, 16) & (1 << 19))
