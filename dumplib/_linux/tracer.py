"""Stopping every thread of a process with PTRACE_SEIZE + PTRACE_INTERRUPT, and letting them go.

SEIZE never sends SIGSTOP, so if the dumper dies (even by SIGKILL) the kernel detaches and the
target simply runs on; there is no stop signal it could be left in.
"""
from __future__ import annotations

import ctypes
import errno
import os
import signal
import time
from typing import Dict, List, Optional

from ..errors import AccessDenied, DumpFailed, ProcessNotFound, TargetRefused
from . import libc

_REGS_SIZE = 27 * 8  # struct user_regs_struct on x86_64
_FPREGS_SIZE = 512  # FXSAVE area
_XSTATE_MAX = 1 << 14


class ThreadState:
    """Registers of one stopped thread, as PTRACE_GETREGSET returns them."""

    def __init__(self, tid: int) -> None:
        self.tid = tid
        self.regs = b""
        self.fpregs = b""
        self.xstate: Optional[bytes] = None
        #: A signal the thread was about to receive when it stopped; re-injected at detach.
        self.pending_signal = 0

    @property
    def stack_pointer(self) -> int:
        return int.from_bytes(self.regs[19 * 8 : 20 * 8], "little")  # rsp is the 20th register


def list_tids(pid: int) -> List[int]:
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        raise ProcessNotFound(pid, f"process {pid} exited before it could be dumped") from None


def _errno_of(exc: OSError) -> int:
    return exc.errno or 0


class StoppedProcess:
    """Context manager: every thread stopped on entry, every thread detached on exit, whatever happens."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.threads: Dict[int, ThreadState] = {}
        self.stopped_at = 0.0
        self.resumed_at = 0.0

    # -- entering ----------------------------------------------------------------------------------
    def __enter__(self) -> "StoppedProcess":
        self.stopped_at = time.monotonic()
        try:
            self._seize_all()
            for state in self.threads.values():
                self._read_registers(state)
        except BaseException:
            self.detach()
            raise
        return self

    def _seize_all(self) -> None:
        # Threads may be created while we stop the others: repeat until a pass finds none new.
        while True:
            new = [t for t in list_tids(self.pid) if t not in self.threads]
            if not new:
                return
            for tid in new:
                self._seize(tid)

    def _seize(self, tid: int) -> None:
        try:
            libc.ptrace(libc.PTRACE_SEIZE, tid, None, None)
        except OSError as exc:
            if _errno_of(exc) == errno.ESRCH and tid != self.pid:
                return  # that thread exited meanwhile
            if _errno_of(exc) == errno.ESRCH:
                raise ProcessNotFound(self.pid, f"process {self.pid} exited before it could be stopped") from None
            if _errno_of(exc) == errno.EPERM:
                raise permission_error(self.pid) from None
            raise DumpFailed(f"PTRACE_SEIZE of thread {tid} failed: {exc}", pid=self.pid, errno=exc.errno) from None
        state = ThreadState(tid)
        self.threads[tid] = state  # from here on, detach() must release it
        try:
            libc.ptrace(libc.PTRACE_INTERRUPT, tid, None, None)
            self._wait_stopped(state)
        except OSError as exc:
            if _errno_of(exc) in (errno.ESRCH, errno.ECHILD) and tid != self.pid:
                del self.threads[tid]
                return
            raise _exited(self.pid) from None

    def _wait_stopped(self, state: ThreadState) -> None:
        status = ctypes.c_int()
        libc.waitpid(state.tid, ctypes.byref(status), libc.WALL)
        value = status.value
        if os.WIFEXITED(value) or os.WIFSIGNALED(value):
            raise OSError(errno.ESRCH, "thread exited")
        if os.WIFSTOPPED(value):
            sig = os.WSTOPSIG(value)
            event = value >> 16
            if not (event == libc.PTRACE_EVENT_STOP or sig == signal.SIGTRAP):
                state.pending_signal = sig  # a signal-delivery stop: hand it back at detach

    def _read_registers(self, state: ThreadState) -> None:
        state.regs = _getregset(state.tid, libc.NT_PRSTATUS, _REGS_SIZE)
        state.fpregs = _getregset(state.tid, libc.NT_PRFPREG, _FPREGS_SIZE)
        try:
            state.xstate = _getregset(state.tid, libc.NT_X86_XSTATE, _XSTATE_MAX)
        except OSError:
            state.xstate = None  # no XSAVE on this CPU

    # -- leaving -------------------------------------------------------------------------------------
    def detach(self) -> None:
        gone = []
        for tid, state in list(self.threads.items()):
            try:
                libc.ptrace(libc.PTRACE_DETACH, tid, None, ctypes.c_void_p(state.pending_signal or None))
            except OSError:
                gone.append(tid)
        self.threads.clear()
        self.resumed_at = time.monotonic()
        if gone:
            _reap(gone)

    def __exit__(self, *exc: object) -> None:
        self.detach()

    @property
    def stopped_seconds(self) -> float:
        return (self.resumed_at or time.monotonic()) - self.stopped_at

    def alive(self) -> bool:
        try:
            with open(f"/proc/{self.pid}/stat", errors="surrogateescape") as f:  # comm may be any bytes
                return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except OSError:
            return False


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
            except OSError:
                pending.discard(tid)  # ECHILD: not ours to reap (alive and detached, or reaped)
        if pending:
            time.sleep(0.01)


def _getregset(tid: int, note_type: int, size: int) -> bytes:
    buf = ctypes.create_string_buffer(size)
    iov = libc.iovec(ctypes.cast(buf, ctypes.c_void_p), size)
    libc.ptrace(libc.PTRACE_GETREGSET, tid, ctypes.c_void_p(note_type), ctypes.byref(iov))
    return buf.raw[: iov.iov_len]


def _exited(pid: int) -> DumpFailed:
    return DumpFailed(f"process {pid} exited while it was being dumped; nothing was kept", pid=pid, reason="exited")


def permission_error(pid: int, action: str = "attach to") -> BaseException:
    """Explain why the kernel refused access (ptrace, or /proc files guarded by the same rules):
    a tracer, another user, a non-dumpable process, Yama, or a missing capability."""
    status = read_status(pid)
    tracer = int(status.get("TracerPid", "0") or 0)
    if tracer and action == "attach to":
        return traced_refusal(pid, tracer)
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


def traced_refusal(pid: int, tracer: int) -> TargetRefused:
    try:
        with open(f"/proc/{tracer}/comm", errors="backslashreplace") as f:  # shown to people, escaped
            name = f.read().strip()
    except OSError:
        name = "?"
    return TargetRefused(
        f"process {pid} is already being traced by process {tracer} ({name}); a process has one tracer"
        f" at a time. Detach that debugger first, or take the dump from it (gdb: `gcore`)",
        pid=pid,
        reason="traced",
        tracer_pid=tracer,
    )


def read_status(pid: int) -> Dict[str, str]:
    out: Dict[str, str] = {}
    try:
        with open(f"/proc/{pid}/status", errors="surrogateescape") as f:  # Name: may be any bytes
            for line in f:
                key, _, value = line.partition(":")
                out[key] = value.strip()
    except OSError:
        pass
    return out


def _has_cap_sys_ptrace() -> bool:
    caps = read_status(os.getpid()).get("CapEff", "0")
    return bool(int(caps, 16) & (1 << 19))
