"""Would the target's seccomp filters let one of its threads make the calls a snapshot injects?

Containers (Docker's default profile) and hardened services (systemd's SystemCallFilter=) run under
seccomp filters, and a filter may answer a clone() with EPERM or by killing the whole process. So
before injecting, the thread's filters are fetched (PTRACE_SECCOMP_GET_FILTER: root, thread stopped)
and run here, on the exact seccomp_data the kernel will build, by a small classic-BPF interpreter.
Only a clear "allow" (or "log") from every filter lets the injection go ahead; anything this
module cannot read or run is a "no".
"""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import ctypes
import struct
from typing import List, Optional, Sequence, Tuple

from ..ptrace import libc

AUDIT_ARCH_X86_64 = 0xC000003E
RET_ACTION_FULL = 0xFFFF0000
RET_ALLOW = 0x7FFF0000
RET_LOG = 0x7FFC0000
MAX_FILTERS = 64
MAX_INSNS = 4096  # BPF_MAXINSNS: the kernel accepts no longer program

Insn = Tuple[int, int, int, int]  # code, jt, jf, k


class Unreadable(Exception):
    """A filter could not be fetched or run here: treat it as forbidding."""


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


def filters_of(tid: int) -> List[List[Insn]]:
    """Every filter attached to stopped thread *tid* (we are its tracer), newest first."""
    out: List[List[Insn]] = []
    for index in range(MAX_FILTERS + 1):
        try:
            count = int(libc.ptrace(libc.PTRACE_SECCOMP_GET_FILTER, tid, ctypes.c_void_p(index or None), None))
        except OSError as exc:
            if exc.errno == 2 and index > 0:  # ENOENT: no filter at this index: that was all of them
                return out
            raise Unreadable(f"its seccomp filters cannot be read ({exc.strerror})") from None
        if not 0 < count <= MAX_INSNS:
            raise Unreadable(f"its seccomp filter {index} has {count} instructions")
        buf = (_SockFilter * count)()
        try:
            libc.ptrace(libc.PTRACE_SECCOMP_GET_FILTER, tid, ctypes.c_void_p(index or None), ctypes.byref(buf))
        except OSError as exc:
            raise Unreadable(f"its seccomp filters cannot be read ({exc.strerror})") from None
        out.append([(f.code, f.jt, f.jf, f.k) for f in buf])
    raise Unreadable(f"it has more than {MAX_FILTERS} seccomp filters")


def seccomp_data(nr: int, ip: int, args: Sequence[int]) -> bytes:
    """struct seccomp_data as the kernel builds it for an x86-64 system call."""
    padded = (list(args) + [0] * 6)[:6]
    return struct.pack("<iIQ6Q", nr, AUDIT_ARCH_X86_64, ip, *(a & 0xFFFFFFFFFFFFFFFF for a in padded))


def verdict(filters: Sequence[Sequence[Insn]], data: bytes) -> int:
    """The action the kernel takes: of every filter's answer, the one with the lowest action."""
    result: Optional[int] = None
    for program in filters:
        ret = run(program, data)
        if result is None or _signed(ret & RET_ACTION_FULL) < _signed(result & RET_ACTION_FULL):
            result = ret
    return RET_ALLOW if result is None else result


def allowed(action: int) -> bool:
    return (action & RET_ACTION_FULL) in (RET_ALLOW, RET_LOG)


def why_not(tid: int, calls: Sequence[Tuple[int, Sequence[int]]], ip: int) -> Optional[str]:
    """None if thread *tid*'s filters allow every (nr, args) in *calls* made at *ip*, else why not."""
    try:
        filters = filters_of(tid)
        for nr, args in calls:
            action = verdict(filters, seccomp_data(nr, ip, args))
            if not allowed(action):
                name, why = _CALLS.get(nr, (f"system call {nr}", "a snapshot makes it in the target"))
                return (f"thread {tid}'s seccomp filter {_action_text(action)} at {name} (system call {nr}),"
                        f" and {why}")
    except Unreadable as exc:
        return f"thread {tid} runs under seccomp and {exc}"
    return None


#: The calls a snapshot injects into the stopped target, and why it needs each.
_CALLS = {
    12: ("brk", "a snapshot first checks with it that its clone would not wait for the target's mmap lock"),
    56: ("clone", "a snapshot is a copy-on-write clone the target makes of itself with that call"),
    61: ("wait4", "the target must reap its snapshot clone with that call once the dump is read"),
}


def _action_text(action: int) -> str:
    """What a filter's answer does to the calling thread, in words (seccomp(2) SECCOMP_RET_*)."""
    full = action & RET_ACTION_FULL
    data = action & 0xFFFF
    if full == 0x80000000:
        return "kills the whole process"
    if full == 0x00000000:
        return "kills the calling thread"
    if full == 0x00030000:
        return "sends SIGSYS"
    if full == 0x00050000:
        return f"fails the call with errno {data}"
    if full == 0x7FF00000:
        return "hands the call to a ptrace tracer"
    if full == 0x7FC00000:
        return "hands the call to a user-space supervisor"
    return f"answers with action {action:#010x} (not allow)"


def run(program: Sequence[Insn], data: bytes) -> int:
    """Run one classic-BPF seccomp program on *data*; its return value. Forward jumps only, as the
    kernel's checker demands, so it ends within len(program) steps."""
    a = x = 0
    mem = [0] * 16
    pc = 0
    while 0 <= pc < len(program):
        code, jt, jf, k = program[pc]
        pc += 1
        cls = code & 0x07
        if cls == 0x00:  # BPF_LD
            a = _load(code, k, data, mem)
        elif cls == 0x01:  # BPF_LDX
            x = _load(code, k, data, mem)
        elif cls == 0x02:  # BPF_ST
            mem[_slot(k)] = a
        elif cls == 0x03:  # BPF_STX
            mem[_slot(k)] = x
        elif cls == 0x04:  # BPF_ALU
            a = _alu(code, a, x if code & 0x08 else k)
        elif cls == 0x05:  # BPF_JMP
            op = code & 0xF0
            if op == 0x00:  # BPF_JA
                pc += k
                continue
            src = x if code & 0x08 else k
            taken = {0x10: a == src, 0x20: a > src, 0x30: a >= src, 0x40: bool(a & src)}.get(op)
            if taken is None:
                raise Unreadable(f"its seccomp filter uses jump {code:#x}")
            pc += jt if taken else jf
        elif cls == 0x06:  # BPF_RET
            return (a if code & 0x18 == 0x10 else k) & 0xFFFFFFFF
        else:  # BPF_MISC
            if code == 0x07:
                x = a  # TAX
            elif code == 0x87:
                a = x  # TXA
            else:
                raise Unreadable(f"its seccomp filter uses instruction {code:#x}")
    raise Unreadable("its seccomp filter ends without a return")


def _load(code: int, k: int, data: bytes, mem: List[int]) -> int:
    mode = code & 0xE0
    if mode == 0x00:  # BPF_IMM
        return k
    if mode == 0x20 and code & 0x18 == 0x00:  # BPF_ABS, word: the only load seccomp allows from data
        if k % 4 or k + 4 > len(data):
            raise Unreadable(f"its seccomp filter loads offset {k}")
        return int.from_bytes(data[k : k + 4], "little")
    if mode == 0x60:  # BPF_MEM
        return mem[_slot(k)]
    if mode == 0x80:  # BPF_LEN
        return len(data)
    raise Unreadable(f"its seccomp filter uses load {code:#x}")


def _alu(code: int, a: int, src: int) -> int:
    op = code & 0xF0
    if op in (0x30, 0x90) and src == 0:
        raise Unreadable("its seccomp filter divides by zero")
    result = {0x00: lambda: a + src, 0x10: lambda: a - src, 0x20: lambda: a * src, 0x30: lambda: a // src,
              0x40: lambda: a | src, 0x50: lambda: a & src, 0x60: lambda: a << (src & 31),
              0x70: lambda: a >> (src & 31), 0x80: lambda: -a, 0x90: lambda: a % src,
              0xA0: lambda: a ^ src}.get(op)
    if result is None:
        raise Unreadable(f"its seccomp filter uses arithmetic {code:#x}")
    return result() & 0xFFFFFFFF


def _slot(k: int) -> int:
    if not 0 <= k < 16:
        raise Unreadable(f"its seccomp filter uses scratch slot {k}")
    return k


def _signed(value: int) -> int:
    return value - (1 << 32) if value & 0x80000000 else value
