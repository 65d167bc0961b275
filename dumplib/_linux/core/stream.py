"""The kernel's core on a core_pattern pipe: its head read, then its memory filtered to a kind as it streams.

The kernel writes the core in file order (ELF header, program headers, notes, page-aligned loads; holes
are written as zeros on a pipe). Everything in it comes from the crashed process, so every length is
checked against limits before anything is allocated, and every read of the pipe is bounded in time.
"""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import bisect
import dataclasses
import os
import select
import struct
import time
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

from ...errors import DumpFailed
from ...formats import elfcore

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_NHDR = struct.Struct("<III")
NT_PRSTATUS = 1
NT_SIGINFO = 0x53494749
#: rsp in NT_PRSTATUS: pr_reg starts at 112, rsp is user_regs_struct's 20th register.
_RSP_AT = 112 + 19 * 8
#: The head (headers and notes) of a real core is far smaller: more is not a core we will parse.
MAX_HEAD = 64 << 20
_BLOCK = 1 << 20


class StreamTimeout(DumpFailed):
    """The kernel's stream stalled or took longer than the handler may hold the crashed process."""


class Pipe:
    """A read end (the handler's stdin) read with bounded waits: *stall* seconds without a byte, or
    *deadline* (time.monotonic) overall, end the read with StreamTimeout."""

    def __init__(self, fd: int, *, stall: float, deadline: float) -> None:
        self.fd, self.stall, self.deadline = fd, stall, deadline
        self.position = 0
        self.eof = False
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN | select.POLLHUP)

    def _wait(self) -> None:
        left = min(self.stall, self.deadline - time.monotonic())
        if left <= 0 or not self._poll.poll(int(left * 1000) + 1):
            raise StreamTimeout(f"the kernel's core stream stalled at byte {self.position} (or the handler's time"
                                " ran out); the crashed process was let go and nothing was kept",
                                reason="stream-timeout")

    def read(self, n: int) -> bytes:
        """Up to *n* bytes (b"" at the end of the stream)."""
        if self.eof or n <= 0:
            return b""
        self._wait()
        data = os.read(self.fd, min(n, _BLOCK))
        if not data:
            self.eof = True
        self.position += len(data)
        return data

    def read_exactly(self, n: int) -> bytes:
        parts, left = [], n
        while left > 0:
            block = self.read(left)
            if not block:
                raise DumpFailed(f"the kernel's core stream ended at byte {self.position}, {left} bytes short of"
                                 " what its headers promise", reason="stream-short")
            parts.append(block)
            left -= len(block)
        return b"".join(parts)

    def skip_to(self, offset: int, tick: Optional[Callable[[int], None]] = None) -> None:
        while self.position < offset:
            if not self.read(offset - self.position):
                raise DumpFailed(f"the kernel's core stream ended at byte {self.position}, before byte {offset}",
                                 reason="stream-short")

    def drain(self) -> int:
        """Read and drop everything left (bounded like every read); the bytes dropped."""
        start = self.position
        while self.read(_BLOCK):
            pass
        return self.position - start


@dataclasses.dataclass(frozen=True)
class KernelLoad:
    vaddr: int
    memsz: int
    offset: int
    filesz: int
    flags: int


@dataclasses.dataclass
class CoreHead:
    """The kernel core's header, program headers and notes, as read from the pipe."""

    raw: bytes
    loads: List[KernelLoad]
    notes: bytes
    #: The crashing thread first (the kernel's order), each thread's stack pointer.
    threads: List[Tuple[int, int]]
    #: The NT_SIGINFO of the crashing thread (128 bytes), if any.
    siginfo: Optional[bytes]

    @property
    def signal(self) -> Tuple[int, int, Optional[int]]:
        """(signal number, si_code, faulting address for the fault signals) from NT_SIGINFO."""
        if not self.siginfo or len(self.siginfo) < 24:
            return 0, 0, None
        signo, _errno, code = struct.unpack_from("<iii", self.siginfo)
        address = struct.unpack_from("<Q", self.siginfo, 16)[0] if signo in (4, 5, 7, 8, 11) else None
        return signo, code, address


def read_head(pipe: Pipe) -> CoreHead:
    """Read the ELF header, program headers and notes; DumpFailed if the stream is not a core we write back."""
    ehdr = pipe.read_exactly(_EHDR.size)
    if ehdr[:4] != b"\x7fELF" or ehdr[4] != 2 or ehdr[5] != 1:
        raise DumpFailed("the kernel's stream is not a 64-bit little-endian ELF core", reason="stream-format")
    _i, etype, machine, _v, _e, phoff, _sh, _fl, _eh, phentsize, phnum, _se, _sn, _ss = _EHDR.unpack(ehdr)
    if etype != elfcore.ET_CORE or machine != elfcore.EM_X86_64 or phentsize != _PHDR.size or phoff != _EHDR.size:
        raise DumpFailed("the kernel's stream is not an x86-64 core laid out as the kernel writes it",
                         reason="stream-format")
    if phnum == elfcore.PN_XNUM:
        # The true count is in a section header the kernel writes after the memory: not readable first.
        raise DumpFailed("the crashed process had more than 65534 mappings; its core cannot be filtered as it"
                         " streams", reason="stream-format")
    phdrs = pipe.read_exactly(phnum * _PHDR.size)
    loads: List[KernelLoad] = []
    note_at, note_size = None, 0
    for i in range(phnum):
        ptype, flags, offset, vaddr, _paddr, filesz, memsz, _align = _PHDR.unpack_from(phdrs, i * _PHDR.size)
        if ptype == elfcore.PT_NOTE and note_at is None:
            note_at, note_size = offset, filesz
        elif ptype == elfcore.PT_LOAD:
            if filesz > memsz:
                raise DumpFailed("the kernel's core has a load larger in the file than in memory",
                                 reason="stream-format")
            loads.append(KernelLoad(vaddr, memsz, offset, filesz, flags))
    if note_at is None or note_at < pipe.position or note_at + note_size > MAX_HEAD:
        raise DumpFailed("the kernel's core has no notes where they belong", reason="stream-format")
    pipe.skip_to(note_at)
    notes = pipe.read_exactly(note_size)
    previous = pipe.position
    for ld in sorted(loads, key=lambda x: x.offset):
        if ld.filesz and ld.offset < previous:
            raise DumpFailed("the kernel's core has overlapping or out-of-order loads", reason="stream-format")
        previous = ld.offset + ld.filesz
    threads, siginfo = _thread_notes(notes)
    return CoreHead(ehdr + phdrs, loads, notes, threads, siginfo)


def _walk_notes(notes: bytes) -> Iterator[Tuple[int, int, int, int, int]]:
    """Each whole note in *notes* as (type, start, name size, descriptor start, descriptor size); the
    walk stops at a note that runs past the end (the kernel's stream is not trusted to be whole)."""
    at = 0
    while at + _NHDR.size <= len(notes):
        namesz, descsz, ntype = _NHDR.unpack_from(notes, at)
        desc = at + _NHDR.size + ((namesz + 3) & ~3)
        end = desc + ((descsz + 3) & ~3)
        if end > len(notes):
            return
        yield ntype, at, namesz, desc, descsz
        at = end


def _note_end(desc: int, descsz: int) -> int:
    return desc + ((descsz + 3) & ~3)


def _thread_notes(notes: bytes) -> Tuple[List[Tuple[int, int]], Optional[bytes]]:
    threads: List[Tuple[int, int]] = []
    siginfo = None
    for ntype, _at, _namesz, desc, descsz in _walk_notes(notes):
        if ntype == NT_PRSTATUS and descsz >= _RSP_AT + 8:
            tid = struct.unpack_from("<i", notes, desc + 32)[0]
            threads.append((tid, struct.unpack_from("<Q", notes, desc + _RSP_AT)[0]))
        elif ntype == NT_SIGINFO and siginfo is None:
            siginfo = notes[desc:desc + descsz]
    return threads, siginfo


def gdb_xstate(notes: bytes) -> bytes:
    """The kernel's notes with each NT_X86_XSTATE in the layout gdb reads (an AMD CPU's XSAVE layout is
    rejected by gdb as "too small", see notes.intel_xstate); everything else byte for byte."""
    from .notes import NT_X86_XSTATE, intel_xstate, note

    out: List[bytes] = []
    end = 0
    for ntype, at, namesz, desc, descsz in _walk_notes(notes):
        end = _note_end(desc, descsz)
        if ntype == NT_X86_XSTATE:
            name = notes[at + _NHDR.size:at + _NHDR.size + namesz].rstrip(b"\0")
            out.append(note(name, ntype, intel_xstate(notes[desc:desc + descsz])))
        else:
            out.append(notes[at:end])
    return b"".join(out) + notes[end:]


@dataclasses.dataclass
class Filtered:
    """The core to write: its header, notes and loads (with where each load's bytes are in the stream)."""

    header: bytes
    notes: bytes
    loads: List[Tuple[int, int, int, int]]  # vaddr, memsz, flags, filesz
    sources: List[int]  # stream offset of each load's stored bytes
    offsets: List[int]  # file offset of each load
    size: int

    @property
    def head(self) -> bytes:
        return self.header + self.notes


def filtered(head: CoreHead, kept: Optional[Sequence[Tuple[int, int]]], extra_notes: bytes) -> Filtered:
    """The core holding only the memory in *kept* ([start, end) ranges, sorted; None: all the kernel wrote).

    Loads keep the kernel's description; memory not kept gets no PT_LOAD at all (a debugger would read
    an unstored load as zeros, which is a lie for memory that held data)."""
    loads: List[Tuple[int, int, int, int]] = []
    sources: List[int] = []
    starts = [k[0] for k in kept] if kept is not None else []
    for ld in sorted(head.loads, key=lambda x: x.vaddr):
        if kept is None:
            loads.append((ld.vaddr, ld.memsz, ld.flags, ld.filesz))
            sources.append(ld.offset)
            continue
        stored_end = ld.vaddr + ld.filesz
        i = max(0, bisect.bisect_right(starts, ld.vaddr) - 1)
        while i < len(kept) and kept[i][0] < stored_end:
            lo, hi = max(kept[i][0], ld.vaddr), min(kept[i][1], stored_end)
            if hi > lo:
                loads.append((lo, hi - lo, ld.flags, hi - lo))
                sources.append(ld.offset + (lo - ld.vaddr))
            i += 1
    notes = gdb_xstate(head.notes) + extra_notes
    header, offsets, end = elfcore.layout(loads, len(notes))
    return Filtered(header, notes, loads, sources, offsets, end)


def copy_filtered(pipe: Pipe, core: Filtered, write: Callable[[bytes], object],
                  tick: Optional[Callable[[int], None]]) -> int:
    """Write *core* in file order, taking each load's bytes from the stream as it goes; the bytes written.

    Padding is written as zeros; the kernel's bytes not kept are read and dropped."""
    write(core.head)
    written = len(core.head)
    order = sorted(range(len(core.loads)), key=lambda i: core.sources[i])
    if order != sorted(order, key=lambda i: core.offsets[i]):
        raise DumpFailed("the loads to keep are not in the stream's order", reason="stream-format")
    for i in order:
        gap = core.offsets[i] - written
        if gap:
            write(bytes(gap))
            written += gap
        pipe.skip_to(core.sources[i])
        left = core.loads[i][3]
        while left:
            block = pipe.read(min(left, _BLOCK))
            if not block:
                raise DumpFailed(f"the kernel's core stream ended at byte {pipe.position} inside a load",
                                 reason="stream-short")
            write(block)
            written += len(block)
            left -= len(block)
            if tick is not None:
                tick(written)
    if core.size > written:
        write(bytes(core.size - written))
        written = core.size
    return written
