"""libc prototypes and the ptrace, wait and regset numbers of the Linux backend, defined once.

Declarations only: every module that calls ptrace, waitpid or tgkill takes them
from here (x86-64 numbers; supported_machine in backend.py refuses other machines).
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

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Callable, Sequence, Tuple

# The libc this interpreter already runs on: no search (find_library forks `ldconfig -p`).
_libc = ctypes.CDLL(None, use_errno=True)

# ptrace requests (linux/ptrace.h)
PTRACE_CONT = 7
PTRACE_DETACH = 17
PTRACE_SYSCALL = 24
PTRACE_SETOPTIONS = 0x4200
PTRACE_GETEVENTMSG = 0x4201
PTRACE_GETSIGINFO = 0x4202
PTRACE_SETSIGINFO = 0x4203
PTRACE_GETREGSET = 0x4204
PTRACE_SETREGSET = 0x4205
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_LISTEN = 0x4208
PTRACE_GETSIGMASK = 0x420A
PTRACE_SETSIGMASK = 0x420B
PTRACE_SECCOMP_GET_FILTER = 0x420C
PTRACE_GET_RSEQ_CONFIGURATION = 0x420F
# ptrace options and the events they report (status >> 16 of a ptrace-stop)
PTRACE_O_TRACESYSGOOD = 0x1
PTRACE_O_TRACECLONE = 0x8
PTRACE_O_TRACEEXIT = 0x40
PTRACE_O_EXITKILL = 0x100000
PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_EXIT = 6
PTRACE_EVENT_STOP = 128
# waitpid flags: __WALL (threads and clones too) and WNOHANG, as the kernel numbers them (a tracee
# thread's wait, and the one injected into the target, use the same values)
WALL = 0x40000000
WNOHANG = 1

# regset note types (elf.h): what PTRACE_GETREGSET reads and a core's notes are named by
NT_PRSTATUS = 1
NT_PRFPREG = 2
NT_X86_XSTATE = 0x202

# x86-64 system call numbers dumplib makes or recognises
SYS_CLONE = 56
SYS_EXIT = 60
SYS_WAIT4 = 61
SYS_EXIT_GROUP = 231
SYS_TGKILL = 234

pid_t = ctypes.c_int


class iovec(ctypes.Structure):
    """struct iovec: one buffer of a scatter/gather call (PTRACE_GETREGSET, PTRACE_SETREGSET)."""

    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def _check_minus_one(result: int, func: Callable[..., int], args: Tuple[object, ...]) -> int:
    """errcheck: -1 means failure with errno set; raise OSError carrying that errno."""
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{func.__name__}: {os.strerror(err)}")
    return result


def _proto(name: str, restype: type, argtypes: Sequence[type]) -> Callable[..., int]:
    fn = getattr(_libc, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)
    fn.errcheck = _check_minus_one
    return fn  # type: ignore[no-any-return]


ptrace = _proto("ptrace", ctypes.c_long, [ctypes.c_long, pid_t, ctypes.c_void_p, ctypes.c_void_p])
waitpid = _proto("waitpid", pid_t, [pid_t, ctypes.POINTER(ctypes.c_int), ctypes.c_int])
# No process_vm_readv: it waits for a stuck mmap lock unkillably (_bounded.py); memory is read
# through /proc/PID/mem, even that of a process in its core dump (coredump_handler.py).
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def tgkill(pid: int, tid: int, sig: int) -> None:
    """Queue *sig* to one thread of another process (Python's pthread_kill reaches only its own)."""
    _syscall(ctypes.c_long(SYS_TGKILL), ctypes.c_long(pid), ctypes.c_long(tid), ctypes.c_long(sig))
