"""A stopped thread's registers and signal state, as PTRACE_GETREGSET and /proc give them (x86-64).

The one register reader of the backend: the core writer (through the stopper), the snapshot's
injected calls and the signal watcher all read registers with read_regset and the sizes below.
"""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import ctypes

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Optional, Tuple

from ..proc.pidfiles import read_status
from . import libc

#: Bytes of one general-purpose register slot in struct user_regs_struct.
SLOT = 8
#: struct user_regs_struct on x86-64: 27 registers of 8 bytes (NT_PRSTATUS's pr_reg).
USER_REGS_SIZE = 27 * SLOT
#: The FXSAVE area (NT_PRFPREG).
FPREGS_SIZE = 512
#: Largest XSAVE area read (NT_X86_XSTATE); the kernel returns what the CPU uses.
XSTATE_MAX = 1 << 14

# Slots of struct user_regs_struct (x86-64, sys/user.h) that dumplib reads or sets.
RBP, R10, R8, RAX, RDX, RSI, RDI, ORIG_RAX, RIP, RSP, FS_BASE = 4, 7, 9, 10, 12, 13, 14, 15, 16, 19, 21


def slot(regs: bytes, index: int, *, signed: bool = False) -> int:
    """Register *index* (a slot above) of a user_regs_struct as PTRACE_GETREGSET returned it."""
    return int.from_bytes(regs[index * SLOT : (index + 1) * SLOT], "little", signed=signed)


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
        """rsp: where the thread's stack is (the stack kept even in a small dump)."""
        return slot(self.regs, RSP)

    @property
    def thread_pointer(self) -> int:
        """fs_base, where x86-64 threads keep their thread control block (TLS is found from it)."""
        return slot(self.regs, FS_BASE)


def read_regset(tid: int, note_type: int, size: int) -> bytes:
    """PTRACE_GETREGSET of stopped tracee *tid*: up to *size* bytes of regset *note_type*
    (libc.NT_PRSTATUS, NT_PRFPREG, NT_X86_XSTATE). OSError when the thread is not in a stop of ours."""
    buf = ctypes.create_string_buffer(size)
    iov = libc.iovec(ctypes.cast(buf, ctypes.c_void_p), size)
    libc.ptrace(libc.PTRACE_GETREGSET, tid, ctypes.c_void_p(note_type), ctypes.byref(iov))
    return buf.raw[: iov.iov_len]


def read_general(tid: int) -> bytes:
    """The general-purpose registers (user_regs_struct) of stopped tracee *tid*."""
    return read_regset(tid, libc.NT_PRSTATUS, USER_REGS_SIZE)


def read_registers(state: ThreadState) -> None:
    """Fill *state* with its thread's general, FXSAVE and (where the CPU has it) XSAVE registers."""
    state.regs = read_general(state.tid)
    state.fpregs = read_regset(state.tid, libc.NT_PRFPREG, FPREGS_SIZE)
    try:
        state.xstate = read_regset(state.tid, libc.NT_X86_XSTATE, XSTATE_MAX)
    except OSError:
        state.xstate = None  # no XSAVE on this CPU


def signal_sets(pid: int, tid: int) -> Tuple[int, int]:
    """(blocked, pending) signal sets of stopped thread *tid* (we are its tracer), as a core records them:
    the mask from PTRACE_GETSIGMASK, the thread's own pending set (SigPnd) from /proc."""
    blocked, pending, _ = signals_and_seccomp(pid, tid)
    return blocked, pending


def signals_and_seccomp(pid: int, tid: int) -> Tuple[int, int, str]:
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
