"""Making one stopped thread of the target run one system call, and putting it back exactly.

Used for snapshots: the thread calls clone() so the kernel makes a copy-on-write image of the
process, and later wait4() so the target reaps that image without ever seeing it. Everything here
runs in the tracer thread (ptrace ties tracees to the thread that attached them), on a thread that
is in a PTRACE_EVENT_STOP, i.e. inside the kernel's signal handling, with its registers saved.

Putting it back: the injected call returns through a syscall-exit-stop, where the kernel would not
restart a system call the thread had been interrupted in (nanosleep would return -ERESTART_RESTARTBLOCK
to its caller). So the saved registers are written back and the thread is sent round the signal path
once more (PTRACE_INTERRUPT, then resume): it stops again exactly where it was first stopped, and when
it is let go the kernel itself restarts its call, or delivers a signal that arrived meanwhile, as if
nobody had looked.
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
import time
from typing import Callable, List, Optional, Sequence

from ..ptrace import libc
from ..ptrace.regs import ORIG_RAX, R8, R10, RAX, RBP, RDI, RDX, RIP, RSI, RSP, SLOT, USER_REGS_SIZE, read_general, slot

CLONE_VM = 0x100
CLONE_FILES = 0x400
#: A copy of the memory (no shared memory or signal handlers) whose exit signal is 0: its parent, the
#: target, gets no SIGCHLD for it, and waitpid() sees it only with __WALL or __WCLONE. It shares the
#: target's descriptor table (CLONE_FILES) instead of holding a duplicate of every descriptor: with
#: duplicates, a descriptor the target closes while the snapshot lives stays open, so its epoll set
#: keeps reporting it, its flock stays held and its peer sees no EOF until the dump is written.
CLONE_FLAGS = CLONE_FILES
SYSCALL_INSN = b"\x0f\x05"
#: The stack and frame pointers during an injected call, the clone child's too: an address no
#: process can map (below vm.mmap_min_addr). Nothing should run after the call but the put-back;
#: if the tracer (snapshot/remote.py's process) is killed inside that window, the thread (and the
#: child, not yet held) runs on from the injected state, and what follows `syscall` in [vdso]
#: (`leave`, `ret`...) uses the
#: stack: it faults, with every signal blocked, so it dies at once rather than returning into the
#: target's code with registers that are not its own.
CHILD_STACK = 0x1000
#: clone(flags, stack, parent_tid, child_tid, tls) as injected.
CLONE_ARGS = (CLONE_FLAGS, CHILD_STACK, 0, 0, 0)
#: clone(flags, stack, ...) of the mmap lock's probe (probe_write_lock): a process sharing the target's
#: memory and descriptor table, not a thread of it, so that it can be killed without the target.
PROBE_CLONE_ARGS = (CLONE_VM | CLONE_FILES, CHILD_STACK, 0, 0, 0)
#: brk(0) takes the mmap lock for writing and changes nothing: it returns the break where it is.
SYS_BRK = 12
#: How long the probe's brk(0) may wait for the mmap lock before it is taken as held. Nothing of the
#: target's takes it (every thread is stopped): only another process's read of its memory or maps.
PROBE_SECONDS = 1.0
#: Longest one step of an injection may take (each is a few microseconds of kernel work).
STEP_TIMEOUT = 2.0
#: Once the thread is inside the injected call, giving up would let it return from the call with the
#: injected registers, and die: past its timeout the call is interrupted (clone() gives up at its next
#: signal check, or ends) and its end waited for this much longer.
INSIDE_CALL_PATIENCE = 120.0

_ALL_SIGNALS = ctypes.c_uint64(0xFFFFFFFFFFFFFFFF)
_FAULTS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE)


class InjectionFailed(Exception):
    """The call could not be made or did not do what was asked; the thread was put back as it was."""


class StepTimeout(InjectionFailed):
    """A thread did not reach its next stop in the time allowed (it may still get there)."""


class Regs:
    """A copy of one thread's user_regs_struct that can be read and changed by slot."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) != USER_REGS_SIZE:
            raise InjectionFailed(f"unexpected register set of {len(raw)} bytes")
        self.raw = bytearray(raw)

    def __getitem__(self, index: int) -> int:
        return slot(bytes(self.raw[index * SLOT : (index + 1) * SLOT]), 0, signed=True)

    def __setitem__(self, index: int, value: int) -> None:
        self.raw[index * SLOT : (index + 1) * SLOT] = (value & 0xFFFFFFFFFFFFFFFF).to_bytes(SLOT, "little")


def find_syscall_instruction(pid: int, maps_text: str, read: Callable[[int, int], Optional[bytes]]) -> Optional[int]:
    """The address of a `syscall` instruction in the target: in [vdso] (the kernel's own code, in every
    process), else in an executable file mapping. Any 0F 05 byte pair executes as one, wherever it
    starts, so no disassembly is needed."""
    candidates: List[Sequence[int]] = []
    for line in maps_text.splitlines():
        fields = line.split()
        if len(fields) < 5 or "x" not in fields[1]:
            continue
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        name = fields[5] if len(fields) > 5 else ""
        if name == "[vsyscall]":
            continue  # emulated: executing there faults except at its three entry points
        candidates.insert(0 if name == "[vdso]" else len(candidates), (lo, hi))
    for lo, hi in candidates[:8]:
        data = read(lo, min(hi - lo, 1 << 20))
        if data:
            at = data.find(SYSCALL_INSN)
            if at >= 0:
                return lo + at
    return None


class _RseqConfiguration(ctypes.Structure):
    _fields_ = [("rseq_abi_pointer", ctypes.c_uint64), ("rseq_abi_size", ctypes.c_uint32),
                ("signature", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


def outside_rseq(tid: int, regs: bytes) -> bool:
    """Whether stopped thread *tid* is surely outside a restartable sequence's critical section.

    Injecting moves the thread's instruction pointer, and the kernel, seeing it outside the
    section on the way back to user space, clears the thread's rseq_cs instead of sending it to the
    abort handler: put back inside the section, the thread would finish a per-CPU operation it
    should have restarted (glibc and tcmalloc use them). A thread in a system call is never inside
    one; for another, its rseq area is read (PTRACE_GET_RSEQ_CONFIGURATION) and False means inside,
    or cannot tell."""
    r = Regs(regs)
    if r[ORIG_RAX] != -1:
        return True
    conf = _RseqConfiguration()
    try:
        size = libc.ptrace(libc.PTRACE_GET_RSEQ_CONFIGURATION, tid, ctypes.c_void_p(ctypes.sizeof(conf)),
                           ctypes.byref(conf))
    except OSError:
        return False  # a kernel before 5.13: cannot tell
    if size < 8 or not conf.rseq_abi_pointer:
        return True  # no rseq area registered
    head = _read_memory(tid, conf.rseq_abi_pointer + 8, 8)  # struct rseq's rseq_cs pointer
    if head is None:
        return False
    cs = int.from_bytes(head, "little")
    if not cs:
        return True
    desc = _read_memory(tid, cs, 32)  # struct rseq_cs: version, flags, start_ip, post_commit_offset, abort_ip
    if desc is None:
        return False
    start, length = int.from_bytes(desc[8:16], "little"), int.from_bytes(desc[16:24], "little")
    ip = r[RIP] & 0xFFFFFFFFFFFFFFFF
    return not start <= ip < start + length


def _read_memory(tid: int, address: int, length: int) -> Optional[bytes]:
    try:
        fd = os.open(f"/proc/{tid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.pread(fd, length, address)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) == length else None


class Injector:
    """Runs system calls in one thread of a stopped target (the caller is its tracer)."""

    def __init__(self, tid: int, saved: bytes, syscall_at: int) -> None:
        self.tid = tid
        self.saved = bytes(saved)
        self.syscall_at = syscall_at
        #: A signal that arrived while the call ran: the caller delivers it at detach, like any other.
        self.pending_signal = 0

    def call(self, nr: int, *args: int, on_clone: Optional[Callable[[int], None]] = None,
             timeout: float = STEP_TIMEOUT) -> int:
        """Run syscall *nr* with *args* in the thread and return its result (a negative errno on error).

        Every signal is blocked in the thread for the call (a clone child inherits that), so none is
        taken meanwhile: those that arrive stay pending and, with the first mask back, are delivered
        after detach as usual. (A signal-delivery-stop would be no good: a signal handed back at a
        later PTRACE_EVENT_STOP is dropped.) *on_clone(child_pid)* is called at the
        PTRACE_EVENT_CLONE stop. Whatever happens, the thread is put back in its first stop with its
        first registers and mask.
        """
        mask = _get_sigmask(self.tid)
        regs = Regs(self.saved)
        regs[RIP] = self.syscall_at
        regs[RSP] = regs[RBP] = CHILD_STACK
        regs[RAX] = nr
        regs[ORIG_RAX] = -1  # no system call in progress: the kernel must not "restart" our registers
        for slot, value in zip((RDI, RSI, RDX, R10, R8), args):
            regs[slot] = value
        options = libc.PTRACE_O_TRACESYSGOOD | (libc.PTRACE_O_TRACECLONE if on_clone else 0)
        result: Optional[int] = None
        at_entry = False
        try:
            _set_sigmask(self.tid, _ALL_SIGNALS.value)
            _ptrace(libc.PTRACE_SETOPTIONS, self.tid, 0, options)
            _set_regs(self.tid, bytes(regs.raw))
            _ptrace(libc.PTRACE_SYSCALL, self.tid, 0, 0)
            try:
                self._until_syscall_stop()
            except StepTimeout:  # paced by a CPU quota: stop it wherever it is, never leave it injected
                _ptrace(libc.PTRACE_INTERRUPT, self.tid, 0, 0)
                if self._until_syscall_stop(timeout=INSIDE_CALL_PATIENCE, or_event_stop=True):
                    raise InjectionFailed(f"thread {self.tid} did not reach the injected call within"
                                          f" {STEP_TIMEOUT:g} s") from None
            at_entry = True
            if Regs(_get_regs(self.tid))[ORIG_RAX] != nr:
                raise InjectionFailed(f"thread {self.tid} entered system call"
                                      f" {Regs(_get_regs(self.tid))[ORIG_RAX]}, not {nr}")
            _ptrace(libc.PTRACE_SYSCALL, self.tid, 0, 0)
            at_entry = False
            while result is None:
                try:
                    event = self._until_syscall_stop(events=True, timeout=timeout)
                except StepTimeout:  # a clone() paced by a CPU quota, or blocked: never abandon it midway
                    _ptrace(libc.PTRACE_INTERRUPT, self.tid, 0, 0)
                    event = self._until_syscall_stop(events=True, timeout=INSIDE_CALL_PATIENCE)
                if event == libc.PTRACE_EVENT_CLONE:
                    if on_clone is not None:
                        on_clone(_event_message(self.tid))
                    _ptrace(libc.PTRACE_SYSCALL, self.tid, 0, 0)
                    continue
                result = Regs(_get_regs(self.tid))[RAX]  # exit
        finally:
            if at_entry:
                self._skip_call()
            self._put_back(mask)
        return result

    def _skip_call(self) -> None:
        """From a syscall-entry-stop, on to its exit without making the call (orig_rax -1 skips it)."""
        regs = Regs(_get_regs(self.tid))
        regs[ORIG_RAX] = -1
        regs[RAX] = -errno.ENOSYS
        _set_regs(self.tid, bytes(regs.raw))
        _ptrace(libc.PTRACE_SYSCALL, self.tid, 0, 0)
        self._until_syscall_stop(timeout=INSIDE_CALL_PATIENCE)

    def _put_back(self, mask: int) -> None:
        """Back to the first stop: saved registers, mask and options, then once round the signal path."""
        _set_regs(self.tid, self.saved)
        _ptrace(libc.PTRACE_SETOPTIONS, self.tid, 0, 0)
        # The first mask back before the trip: the pending trap is taken before any signal is, and
        # should the trip outlast our patience, the thread is already whole.
        _set_sigmask(self.tid, mask)
        _ptrace(libc.PTRACE_INTERRUPT, self.tid, 0, 0)
        _ptrace(libc.PTRACE_CONT, self.tid, 0, 0)
        self._until_event_stop(timeout=INSIDE_CALL_PATIENCE)
        _set_regs(self.tid, self.saved)  # unchanged by the trip; written again so the stop holds them
        if self.pending_signal == signal.SIGSTOP:
            # The one signal the blocked mask lets through was taken on the way to the call, and one
            # handed back at this PTRACE_EVENT_STOP would be dropped: sent again, it stays pending
            # (every thread is stopped) and stops the process once it is let go, as it would have;
            # unless a SIGCONT came since, which would have cancelled it.
            if not _sigcont_pending(self.tid):
                os.kill(self.tid, signal.SIGSTOP)
            self.pending_signal = 0

    def _until_syscall_stop(self, events: bool = False, timeout: float = STEP_TIMEOUT,
                            or_event_stop: bool = False) -> int:
        """Wait for the next syscall stop (0) or, with *events*, a PTRACE_EVENT_CLONE stop (its number),
        or with *or_event_stop* a PTRACE_EVENT_STOP (its number: our interrupt came first).

        A signal arriving meanwhile is kept for detach and the thread sent on without it."""
        while True:
            status = _wait_stop(self.tid, timeout)
            sig, event = (status >> 8) & 0xFF, (status >> 16) & 0xFF
            if sig == (signal.SIGTRAP | 0x80):
                return 0
            if event and or_event_stop and event == libc.PTRACE_EVENT_STOP:
                return event
            if event and events and event == libc.PTRACE_EVENT_CLONE:
                return event
            if not event and sig in _FAULTS:
                # The injected code faulted (a signal nobody sends while all are blocked): resumed
                # without it, the thread would fault again at once, for ever.
                raise InjectionFailed(f"thread {self.tid} faulted ({signal.Signals(sig).name})"
                                      " running the injected call")
            if not event and sig != signal.SIGTRAP:
                self.pending_signal = self.pending_signal or sig  # a signal-delivery-stop: deliver it later
            _ptrace(libc.PTRACE_SYSCALL, self.tid, 0, 0)

    def _until_event_stop(self, timeout: float = STEP_TIMEOUT) -> None:
        while True:
            status = _wait_stop(self.tid, timeout)
            sig, event = (status >> 8) & 0xFF, (status >> 16) & 0xFF
            if event == libc.PTRACE_EVENT_STOP:
                return
            if not event and sig not in (signal.SIGTRAP, signal.SIGTRAP | 0x80):
                self.pending_signal = self.pending_signal or sig
            _ptrace(libc.PTRACE_CONT, self.tid, 0, 0)


def probe_write_lock(child: int, syscall_at: int, timeout: float = PROBE_SECONDS) -> bool:
    """Whether the mmap lock of the memory that stopped tracee *child* shares with the target can be taken
    for writing: *child* (made by an injected clone(PROBE_CLONE_ARGS), a process of its own) is made to
    call brk(0), and False once it still waits after *timeout*. The caller kills it either way (a wait
    for that lock ends at SIGKILL). This is the wait a snapshot's clone() would meet in the target,
    where it could not be called off: a read of the target's memory stuck on a hung FUSE or NFS mount
    holds the lock for reading for good, and the clone (dup_mmap) needs it for writing."""
    regs = Regs(_get_regs(child))
    regs[RIP] = syscall_at
    regs[RSP] = regs[RBP] = CHILD_STACK
    regs[RAX] = SYS_BRK
    regs[ORIG_RAX] = -1
    regs[RDI] = 0
    _set_regs(child, bytes(regs.raw))
    _ptrace(libc.PTRACE_SETOPTIONS, child, 0, libc.PTRACE_O_TRACESYSGOOD | libc.PTRACE_O_EXITKILL)
    _ptrace(libc.PTRACE_SYSCALL, child, 0, 0)
    deadline = time.monotonic() + timeout
    entered = False
    while True:
        try:
            status = _wait_stop(child, max(0.0, deadline - time.monotonic()))
        except StepTimeout:
            return False
        if (status >> 8) & 0xFF == (signal.SIGTRAP | 0x80):
            if entered:
                return True  # back from brk(): it had the lock
            entered = True
        _ptrace(libc.PTRACE_SYSCALL, child, 0, 0)  # on from the entry, or past another stop


def wait_child_stop(pid: int, timeout: float = STEP_TIMEOUT) -> bool:
    """Wait for a new auto-attached child's first stop; False if it died or never got there."""
    try:
        status = _wait_stop(pid, timeout)
    except InjectionFailed:
        return False
    return os.WIFSTOPPED(status)


def _wait_stop(tid: int, timeout: float = STEP_TIMEOUT) -> int:
    """The next wait status of *tid*, polled (the tracer never blocks without a bound)."""
    status = ctypes.c_int()
    deadline = time.monotonic() + timeout
    nap = 0.00002
    while True:
        try:
            got = libc.waitpid(tid, ctypes.byref(status), libc.WALL | libc.WNOHANG)
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            raise InjectionFailed(f"thread {tid} is gone ({exc.strerror})") from None
        if got == tid:
            value = status.value
            if os.WIFEXITED(value) or os.WIFSIGNALED(value):
                raise InjectionFailed(f"thread {tid} ended during the injected call")
            return value
        if time.monotonic() > deadline:
            raise StepTimeout(f"thread {tid} did not stop within {timeout:g} s")
        time.sleep(nap)
        nap = min(nap * 2, 0.002)


def _sigcont_pending(tid: int) -> bool:
    """Whether a SIGCONT waits for thread *tid* or its process (traced, it is queued, not ignored)."""
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            lines = [line.split() for line in f if line.startswith((b"SigPnd:", b"ShdPnd:"))]
        return any(int(fields[1], 16) & (1 << (signal.SIGCONT - 1)) for fields in lines)
    except (OSError, ValueError, IndexError):
        return False


def _ptrace(request: int, tid: int, addr: int, data: int) -> None:
    try:
        libc.ptrace(request, tid, ctypes.c_void_p(addr or None), ctypes.c_void_p(data or None))
    except OSError as exc:
        raise InjectionFailed(f"ptrace request {request:#x} on thread {tid} failed: {exc.strerror}") from None


def _get_regs(tid: int) -> bytes:
    try:
        return read_general(tid)
    except OSError as exc:
        raise InjectionFailed(f"reading the registers of thread {tid} failed: {exc.strerror}") from None


def _set_regs(tid: int, raw: bytes) -> None:
    buf = ctypes.create_string_buffer(raw, len(raw))
    iov = libc.iovec(ctypes.cast(buf, ctypes.c_void_p), len(raw))
    _ptrace_ref(libc.PTRACE_SETREGSET, tid, libc.NT_PRSTATUS, iov)


def _get_sigmask(tid: int) -> int:
    mask = ctypes.c_uint64()
    _ptrace_ref(libc.PTRACE_GETSIGMASK, tid, 8, mask)
    return mask.value


def _set_sigmask(tid: int, value: int) -> None:
    _ptrace_ref(libc.PTRACE_SETSIGMASK, tid, 8, ctypes.c_uint64(value))


def _event_message(tid: int) -> int:
    msg = ctypes.c_ulong()
    _ptrace_ref(libc.PTRACE_GETEVENTMSG, tid, 0, msg)
    return msg.value


def _ptrace_ref(request: int, tid: int, addr: int, obj: ctypes._CData) -> None:
    try:
        libc.ptrace(request, tid, ctypes.c_void_p(addr or None), ctypes.byref(obj))
    except OSError as exc:
        raise InjectionFailed(f"ptrace request {request:#x} on thread {tid} failed: {exc.strerror}") from None
