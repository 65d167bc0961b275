"""The PT_NOTE contents of a Linux core, in the kernel's order, byte-compatible with its structs."""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import struct

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Protocol, Dict, List, Optional, Sequence, Tuple
else:
    from ..._typing import Protocol

from ..proc.maps import PAGE, Region
from ..proc.pidfiles import Stat

if TYPE_CHECKING:
    from ..._platform import TargetEvent



class ThreadState(Protocol):
    """What the notes need of a stopped thread (ptrace/regs.py ThreadState; the ptrace layer needs libc, and these
    pure builders must import on any OS)."""

    tid: int
    regs: bytes
    fpregs: bytes
    xstate: Optional[bytes]
    sighold: int  # blocked signals
    sigpend: int  # signals pending for this thread

NT_PRSTATUS = 1
NT_FPREGSET = 2
NT_PRPSINFO = 3
NT_AUXV = 6
NT_X86_XSTATE = 0x202
NT_SIGINFO = 0x53494749
NT_FILE = 0x46494C45

PRSTATUS_SIZE = 336
PRPSINFO_SIZE = 136
SIGINFO_SIZE = 128

# XSAVE component offsets in the standard (non-compacted) layout. Intel's are what gdb 13 assumes;
# AMD CPUs report their own through CPUID and the kernel hands those out, which gdb rejects as "too
# small". Components: 2 AVX (256 B), 5 opmask (64), 6 ZMM_Hi256 (512), 7 Hi16_ZMM (1024), 9 PKRU (8).
_SIZES = {2: 256, 3: 64, 4: 64, 5: 64, 6: 512, 7: 1024, 9: 8}
_INTEL = {2: 576, 3: 960, 4: 1024, 5: 1088, 6: 1152, 7: 1664, 9: 2688}
_AMD = {2: 576, 5: 832, 6: 896, 7: 1408, 9: 2432}
XCR0_OFFSET = 464  # where Linux stores XCR0 in the sw_reserved bytes of the FXSAVE area
XSTATE_BV_OFFSET = 512


def note(name: bytes, note_type: int, desc: bytes) -> bytes:
    name_z = name + b"\0"
    out = struct.pack("<III", len(name_z), len(desc), note_type) + name_z
    out += b"\0" * (-len(out) % 4) + desc
    return out + b"\0" * (-len(out) % 4)


def _layout_size(offsets: Dict[int, int], xcr0: int) -> Optional[int]:
    ends = [offsets[c] + _SIZES[c] for c in _SIZES if xcr0 & (1 << c)]
    if any(xcr0 & (1 << c) and c not in offsets for c in _SIZES):
        return None
    return max(ends, default=576)


def intel_xstate(xstate: bytes) -> bytes:
    """Re-lay an AMD-layout XSAVE buffer out in Intel's, so gdb shows AVX registers; else unchanged."""
    if len(xstate) < XSTATE_BV_OFFSET + 64:
        return xstate
    xcr0 = int.from_bytes(xstate[XCR0_OFFSET : XCR0_OFFSET + 8], "little")
    amd_size, intel_size = _layout_size(_AMD, xcr0), _layout_size(_INTEL, xcr0)
    if amd_size is None or intel_size is None or amd_size == intel_size or len(xstate) != amd_size:
        return xstate
    out = bytearray(intel_size)
    out[:576] = xstate[:576]  # legacy FXSAVE area and XSAVE header
    for comp, size in _SIZES.items():
        if xcr0 & (1 << comp) and comp in _AMD:
            out[_INTEL[comp] : _INTEL[comp] + size] = xstate[_AMD[comp] : _AMD[comp] + size]
    return bytes(out)


def prstatus(thread: "ThreadState", ids: Tuple[int, int, int, int], signo: int = 0) -> bytes:
    """struct elf_prstatus: the signal being dumped for (0 for a live dump) in pr_info.si_signo and
    pr_cursig, as the kernel's fill_prstatus sets them for every thread; its pending and blocked
    signals; the thread's ids; its general registers."""
    _pid, ppid, pgrp, sid = ids
    buf = bytearray(PRSTATUS_SIZE)
    struct.pack_into("<i", buf, 0, signo)  # pr_info.si_signo (si_code, si_errno stay 0, as the kernel leaves them)
    struct.pack_into("<h", buf, 12, signo)  # pr_cursig
    struct.pack_into("<QQ", buf, 16, thread.sigpend, thread.sighold)  # pr_sigpend, pr_sighold
    struct.pack_into("<iiii", buf, 32, thread.tid, ppid, pgrp, sid)
    buf[112 : 112 + len(thread.regs)] = thread.regs
    struct.pack_into("<i", buf, 328, 1)  # pr_fpvalid: an FPREGSET note follows
    return bytes(buf)


def prpsinfo(pid: int, stat: Stat, uid: int, gid: int, cmdline: bytes, comm: bytes) -> bytes:
    """struct elf_prpsinfo from /proc/PID/stat, cmdline and comm.

    *comm* and *cmdline* are the kernel's bytes, written as they are: a name need not be UTF-8."""
    state = stat.state
    ppid, pgrp, sid, flags, nice = stat.ppid, stat.pgrp, stat.session, stat.flags, stat.nice
    buf = bytearray(PRPSINFO_SIZE)
    struct.pack_into(
        "<bcbb4xQIIiiii", buf, 0,
        max(0, "RSDTZW".find(state)), state.encode()[:1] or b"R", 1 if state == "Z" else 0,
        max(-128, min(127, nice)), flags, uid, gid, pid, ppid, pgrp, sid,
    )
    fname = comm[:15]
    buf[40 : 40 + len(fname)] = fname
    args = cmdline.replace(b"\0", b" ").strip()[:79]
    buf[56 : 56 + len(args)] = args
    return bytes(buf)


def nt_file(regions: Sequence[Region]) -> bytes:
    # Region paths are smaps text decoded with surrogateescape: encoding back the same way gives
    # the kernel's bytes, which is what gdb must see to open the file (a path need not be UTF-8).
    entries: List[Tuple[int, int, int, bytes]] = [
        (r.start, r.end, r.offset // PAGE, r.path.encode("utf-8", "surrogateescape"))
        for r in regions if r.file_backed
    ]
    head = struct.pack("<QQ", len(entries), PAGE)
    table = b"".join(struct.pack("<QQQ", s, e, o) for s, e, o, _ in entries)
    names = b"".join(p + b"\0" for *_, p in entries)
    return head + table + names


def event_signal(event: "Optional[TargetEvent]") -> int:
    """The signal a core taken at *event* is for: the one about to be delivered, or the one the
    process is dying of (0: none, a live dump or a plain exit)."""
    if event is None:
        return 0
    if event.kind == "signal":
        return event.code or 0
    return (event.signal or 0) if event.kind == "exit" else 0


def event_siginfo(event: "Optional[TargetEvent]") -> bytes:
    """NT_SIGINFO's 128 bytes: the siginfo_t the watcher read at the signal-delivery-stop (what the
    kernel's core writer copies), for a signal about to act or the one a process died of; for a
    death the watcher did not see delivered (SIGKILL) only si_signo is known."""
    if event is not None and event.kind in ("signal", "exit") and isinstance(event.raw, bytes) and event.raw:
        return event.raw[:SIGINFO_SIZE].ljust(SIGINFO_SIZE, b"\0")
    return struct.pack("<i", event_signal(event)).ljust(SIGINFO_SIZE, b"\0")


def event_thread_first(threads: Sequence["ThreadState"], event: "Optional[TargetEvent]") -> List["ThreadState"]:
    """*threads* with the one *event* happened on first, as the kernel puts the thread that dumps."""
    tid = event.tid if event is not None else None
    return sorted(threads, key=lambda t: t.tid != tid)  # stable: the others keep their order


def build_notes(
    threads: Sequence["ThreadState"],
    *,
    ids: Tuple[int, int, int, int],
    psinfo: bytes,
    auxv: bytes,
    regions: Sequence[Region],
    event: "Optional[TargetEvent]" = None,
) -> bytes:
    """All notes in the kernel's order; the first thread is the one debuggers show as current: the
    one *event* (a watcher's signal or exit) happened on, whose note set carries its siginfo."""
    signo = event_signal(event)
    parts: List[bytes] = []
    for index, t in enumerate(event_thread_first(threads, event)):
        parts.append(note(b"CORE", NT_PRSTATUS, prstatus(t, ids, signo)))
        if index == 0:
            parts.append(note(b"CORE", NT_PRPSINFO, psinfo))
            parts.append(note(b"CORE", NT_SIGINFO, event_siginfo(event)))
            parts.append(note(b"CORE", NT_AUXV, auxv))
            parts.append(note(b"CORE", NT_FILE, nt_file(regions)))
        parts.append(note(b"CORE", NT_FPREGSET, t.fpregs))
        if t.xstate:
            parts.append(note(b"LINUX", NT_X86_XSTATE, intel_xstate(t.xstate)))
    return b"".join(parts)
