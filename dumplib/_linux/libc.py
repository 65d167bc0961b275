"""libc prototypes for the Linux backend: ptrace, waitpid, process_vm_readv. Declarations only."""
from __future__ import annotations

import sys

assert sys.platform.startswith("linux")  # Linux only (and mypy checks this module only there)

import ctypes
import os
from typing import Any, Tuple

# The libc this interpreter already runs on: no search (find_library forks `ldconfig -p`).
_libc = ctypes.CDLL(None, use_errno=True)

PTRACE_CONT = 7
PTRACE_DETACH = 17
PTRACE_SYSCALL = 24
PTRACE_SETOPTIONS = 0x4200
PTRACE_GETEVENTMSG = 0x4201
PTRACE_GETREGSET = 0x4204
PTRACE_SETREGSET = 0x4205
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_GETSIGMASK = 0x420A
PTRACE_SETSIGMASK = 0x420B
PTRACE_O_TRACESYSGOOD = 0x1
PTRACE_O_TRACECLONE = 0x8
PTRACE_O_EXITKILL = 0x100000
PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_STOP = 128
WALL = 0x40000000

NT_PRSTATUS = 1
NT_PRFPREG = 2
NT_X86_XSTATE = 0x202

pid_t = ctypes.c_int


class iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def _check_minus_one(result: Any, func: Any, args: Tuple[Any, ...]) -> Any:
    """errcheck: -1 means failure with errno set; raise OSError carrying that errno."""
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{func.__name__}: {os.strerror(err)}")
    return result


def _proto(name: str, restype: Any, argtypes: Any) -> Any:
    fn = getattr(_libc, name)
    fn.restype = restype
    fn.argtypes = argtypes
    fn.errcheck = _check_minus_one
    return fn


ptrace = _proto("ptrace", ctypes.c_long, [ctypes.c_long, pid_t, ctypes.c_void_p, ctypes.c_void_p])
waitpid = _proto("waitpid", pid_t, [pid_t, ctypes.POINTER(ctypes.c_int), ctypes.c_int])
process_vm_readv = _proto(
    "process_vm_readv",
    ctypes.c_ssize_t,
    [pid_t, ctypes.POINTER(iovec), ctypes.c_ulong, ctypes.POINTER(iovec), ctypes.c_ulong, ctypes.c_ulong],
)
