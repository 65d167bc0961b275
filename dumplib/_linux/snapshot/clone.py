"""The snapshot's clone: the stopper that makes the stopped target clone itself, holds the clone, and
drops it afterwards, with the target made to reap it without ever seeing it.

The stopper itself (ptrace/stopper.py) knows nothing of snapshots; this subclass adds the injected
clone() (snapshot/inject.py) and its reaping, run on the stopper's tracer thread through its Mailbox.
It runs in the snapshot's helper process (snapshot/remote.py), so that dumplib dying cannot leave a
thread of the target in its injected state.
"""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import ctypes
import os
import signal
import time
from typing import Dict, List, Optional

from ...errors import ProcessNotFound
from ..proc.pidfiles import pid_in_namespace_of, private_bytes, read_stat, read_status, thread_state
from ..ptrace import libc
from ..ptrace.regs import USER_REGS_SIZE, ThreadState
from ..priority import group_raised, raised
from ..ptrace.stopper import StoppedProcess, reap
from . import inject, seccomp
from .policy import LEFT_ZOMBIE, find_syscall, reap_in


class SnapshotStopper(StoppedProcess):
    """StoppedProcess that can also take a snapshot (a copy-on-write clone of the stopped target)."""

    def __init__(self, pid: int, *, max_pause: Optional[float] = None) -> None:
        super().__init__(pid, max_pause=max_pause)
        #: The clone's pid as the target's pid namespace numbers it (what clone() returned, and what
        #: the target's wait4() needs): in a container it differs from snapshot_pid.
        self._snapshot_local_pid = 0
        self._syscall_at = 0

    def take_snapshot(self, syscall_at: int, probe_lock: bool = False, *, resume: bool = False) -> int:
        """Make the stopped target clone itself and return the clone's pid.

        The clone is a copy-on-write image of the process at this instant that never runs: the
        tracer holds it stopped (PTRACE_O_EXITKILL: killed if dumplib dies) until release, then
        kills it and has the target reap it. inject.InjectionFailed: no clone exists, and the target
        is exactly as it was (still stopped). *probe_lock*: first make sure the clone will not wait
        for the target's mmap lock (_probe_lock). *resume*: let the target go once the clone is made
        (resume_target), as the one order the caller waits for."""
        child = self.ask(lambda: self._snapshot(syscall_at, probe_lock))
        if resume:
            self.resume_target()
        return child


    def _snapshot(self, syscall_at: int, probe_lock: bool = False) -> int:
        if self.snapshot_pid is not None:
            raise inject.InjectionFailed("a snapshot is already held")
        state = self._injectable_thread()
        self._syscall_at = syscall_at
        if read_status(self.pid, state.tid).get("Seccomp") == "2":
            # The reap's wait4 is checked now too (with a stand-in pid), so no clone is made that
            # the target could not be made to reap.
            calls = [(libc.SYS_CLONE, inject.CLONE_ARGS), (libc.SYS_WAIT4, (1 << 22, 0, libc.WALL | libc.WNOHANG, 0))]
            if probe_lock:
                calls += [(libc.SYS_CLONE, inject.PROBE_CLONE_ARGS), (inject.SYS_BRK, (0,))]
            why = seccomp.why_not(state.tid, calls, syscall_at)
            if why:
                raise inject.InjectionFailed(why)
        if probe_lock:
            self._probe_lock(state, syscall_at)
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
        # The clone() runs in the target's thread, at the target's priority: copying the page tables of
        # 2 GiB is ~35 ms of CPU, and each ptrace step around the call wakes that thread. At nice 0 on a
        # loaded host (ten busy threads in its session on 2 CPUs) it waited for a CPU at every step: the
        # clone took 0.11-0.16 s where it takes 0.04 s on a quiet one. So the thread runs at this
        # helper's priority (the stop's, backend.py's STOP_NICE, inherited) for the call. A thread's nice
        # weighs only inside its autogroup, though: against other sessions' load (other services: eight
        # busy sessions, load 10) the call waited 70-153 ms for a CPU (schedstat). So the target's
        # autogroup is raised to the same nice for the call too (its whole session shares that for
        # the call): 0-20 ms of waiting then, the call 24-53 ms. Both get their own values back before the target is let go, also when
        # the call fails. A helper killed during the call leaves them raised, as it leaves the injected
        # call itself midway: the helper must not die.
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        with raised(state.tid, ours) as thread, group_raised(self.pid, ours) as group:
            result = injector.call(libc.SYS_CLONE, *inject.CLONE_ARGS, on_clone=hold,
                                   timeout=inject.STEP_TIMEOUT + 0.1 * rss_gib)
        for whose, kept in ((f"thread {state.tid}'s nice value", thread), (f"the autogroup of process {self.pid}", group)):
            if kept.failed:
                self.snapshot_warnings.append(
                    f"{whose} was raised to {kept.nice} for the snapshot's clone() and could not be put back"
                    f" ({kept.failed}); it may stay at {kept.nice} until set again (renice, or /proc/PID/autogroup)")
        self._snapshot_local_pid = max(result, 0)
        if result < 0 or not children or pid_in_namespace_of(children[0], state.tid) != result:
            self._drop_snapshot()
            why = os.strerror(-result) if result < 0 else f"it returned {result}"
            raise inject.InjectionFailed(f"clone() in thread {state.tid} failed: {why}")
        return children[0]

    def _probe_lock(self, state: ThreadState, syscall_at: int) -> None:
        """InjectionFailed if the target's mmap lock cannot be taken for writing now. The clone() a
        snapshot injects copies the memory map under that lock (dup_mmap); held for good (a read of
        the target's memory stuck on a hung mount), the clone would wait in the target for as long, a
        wait only SIGKILL ends: the thread could not be put back, and once let go it would return
        from the call with the injected registers and die. So a throwaway process sharing the
        target's memory (clone with CLONE_VM, which takes no lock) tries the lock first, with brk(0),
        and is killed, collected and reaped by the target either way."""
        children: List[int] = []

        def hold(child: int) -> None:
            children.append(child)
            inject.wait_child_stop(child)

        local = inject.Injector(state.tid, state.regs, syscall_at).call(libc.SYS_CLONE, *inject.PROBE_CLONE_ARGS,
                                                                       on_clone=hold)
        if local <= 0 or not children:
            for child in children:
                _kill_and_collect(child)
            raise inject.InjectionFailed(f"the probe of its mmap lock could not be made: clone() in thread"
                                         f" {state.tid} returned {local}")
        child = children[0]
        try:
            free = inject.probe_write_lock(child, syscall_at)
        finally:
            _kill_and_collect(child)
            why = reap_in(self.pid, child, local, syscall_at, self.threads)
            if why:
                self.snapshot_warnings.append(why.replace("the snapshot", "the probe of its mmap lock"))
        if not free:
            raise inject.InjectionFailed(
                f"its mmap lock is held: a brk() taking it for writing, made by a process sharing its memory,"
                f" still waited after {inject.PROBE_SECONDS:g} s (a read of its memory stuck on a hung FUSE or NFS"
                f" mount holds it), and the clone() a snapshot makes would wait for it inside the process, where"
                f" no wait can be called off")

    def _injectable_thread(self) -> ThreadState:
        """A thread to run the injected call: none with a signal to hand back (a signal handed back at a
        later stop is lost), none inside a restartable sequence (inject.outside_rseq); the leader first."""
        usable = [t for t in self.threads.values() if not t.pending_signal and len(t.regs) == USER_REGS_SIZE
                  and inject.outside_rseq(t.tid, t.regs)]
        if not usable:
            raise inject.InjectionFailed("every thread was on its way to a signal or inside a restartable sequence")
        usable.sort(key=lambda t: (t.tid != self.pid, t.tid))
        return usable[0]

    def _after_release(self) -> None:
        self._drop_snapshot()

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
        self.snapshot_bytes = private_bytes(child)
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
                    pause.seize_all()
                    # Registers of the few threads reap_in may use, not of all: with thousands of
                    # threads, reading each one's would lengthen this second stop by seconds.
                    threads = {tid: pause.threads[tid] for tid in _reap_candidates(self.pid, pause.threads)}
                    for state in threads.values():
                        pause.read_registers(state)
                except ProcessNotFound:  # it exited: its children, the clone too, went to a reaper
                    threads = {}
                except BaseException as exc:  # a thread that will not stop (another tracer: strace -p)
                    threads, why = {}, (f"the snapshot (process {child}) is left as a zombie child of process"
                                        f" {self.pid}: the process could not be stopped again to reap it ({exc});"
                                        f" {LEFT_ZOMBIE.format(pid=self.pid)}")
            reap([child])  # as its tracer: from here it is the (stopped) target's zombie
    
            # Once the target has run, the instruction used for the clone may be gone: an execve
            # maps a new [vdso] elsewhere, and a wait4 run at the old address faults (with every
            # signal blocked, the kernel then resets the target's SIGSEGV handler and kills it).
            # Read through a live thread: a leader that called pthread_exit has an empty maps file.
            at = self._syscall_at if pause is None else find_syscall(min(threads)) if threads else None
            if threads and at is None:
                why = (f"the snapshot (process {child}) is left as a zombie child of process {self.pid}: no system"
                       " call instruction was found in it to make it reap the snapshot;"
                       f" {LEFT_ZOMBIE.format(pid=self.pid)}")
            elif threads and at is not None:
                why = reap_in(self.pid, child, self._snapshot_local_pid, at, threads) or None
        finally:
            if pause is not None:
                pause.detach_all()
                self.reap_pause = time.monotonic() - started
        if why:
            self.snapshot_warnings.append(why)


def reap_orphan(pid: int, child: int, start_ticks: int) -> Optional[str]:
    """Have process *pid* reap *child*, a snapshot of it whose tracer died (a SIGKILLed helper: the
    kernel killed the clone with it, PTRACE_O_EXITKILL, and left it a zombie child of *pid*). The same
    second stop and injected wait4 as _drop_snapshot, from a new tracer. Only a zombie whose parent is
    *pid* and whose start is *start_ticks* is reaped: the clone's own pid, held by its zombie, never
    another child of the target's. None when done (or nothing to do), else why not."""
    stat = read_stat(child)
    if stat is None or stat.state not in ("Z", "X") or stat.ppid != pid or stat.start_ticks != start_ticks:
        return None  # reaped already (the target's own waitpid(__WALL), or its exit), or not ours
    local = pid_in_namespace_of(child, pid) or 0
    pause = StoppedProcess(pid)
    why: Optional[str] = None
    try:
        try:
            pause.seize_all()
            threads = {tid: pause.threads[tid] for tid in _reap_candidates(pid, pause.threads)}
            for state in threads.values():
                pause.read_registers(state)
        except ProcessNotFound:  # it exited: its children, the clone too, went to a reaper
            return None
        except BaseException as exc:  # a thread that will not stop (another tracer: strace -p)
            return (f"the snapshot (process {child}) is left as a zombie child of process {pid}: the process"
                    f" could not be stopped to reap it ({exc}); {LEFT_ZOMBIE.format(pid=pid)}")
        at = find_syscall(min(threads)) if threads and local else None
        if at is None:
            why = (f"the snapshot (process {child}) is left as a zombie child of process {pid}: no system call"
                   f" instruction was found in it to make it reap the snapshot; {LEFT_ZOMBIE.format(pid=pid)}")
        else:
            why = reap_in(pid, child, local, at, threads) or None
    finally:
        pause.detach_all()
    return why


#: Threads whose registers the reaping stop reads: reap_in gives up after three failed tries.
_REAP_CANDIDATES = 4


def _reap_candidates(pid: int, threads: Dict[int, ThreadState]) -> List[int]:
    """The leader first (as reap_in orders them), then the lowest tids; without a pending signal."""
    ordered = sorted(threads, key=lambda tid: (tid != pid, tid))
    return [tid for tid in ordered if not threads[tid].pending_signal][:_REAP_CANDIDATES]


def _kill_and_collect(child: int) -> None:
    """SIGKILL our tracee *child* and collect it as its tracer: it is then its parent's zombie (the
    target's, which reap_in makes reap it)."""
    try:
        os.kill(child, signal.SIGKILL)
    except ProcessLookupError:
        return
    _wait_zombie(child)
    reap([child])


def _wait_zombie(pid: int, patience: float = 2.0) -> None:
    """Wait (bounded) until killed process *pid*, our tracee, has exited and freed its memory: a zombie
    (only its tracer can see it as one), or gone."""
    deadline = time.monotonic() + patience
    while thread_state(pid, pid) not in ("", "Z", "X") and time.monotonic() < deadline:
        time.sleep(0.0005)


