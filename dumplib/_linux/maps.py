"""Which memory a Linux core holds: /proc/PID/smaps parsed, then chosen per kind like the kernel.

The same selection serves the plan (and so the size estimate) and the writer, so the two cannot
drift: the writer re-reads the maps once the target is stopped and applies these same rules.
"""
from __future__ import annotations

import bisect
import dataclasses
from typing import Dict, Iterable, List, Optional, Sequence

from ..kinds import CoreFilter, DumpKind

PAGE = 4096
#: Never dumped, as in the kernel: per-CPU clock pages and the legacy vsyscall page.
SPECIAL_SKIP = ("[vvar]", "[vvar_vclock]", "[vsyscall]")
#: The x86-64 red zone below the stack pointer that leaf functions may use.
RED_ZONE = 128


@dataclasses.dataclass
class Region:
    """One line of /proc/PID/maps with the smaps fields dumplib needs."""

    start: int
    end: int
    perms: str
    offset: int
    inode: int
    path: str
    anonymous: int = 0  # bytes of anonymous (private, COW'd or never file-backed) pages
    rss: int = 0
    swap: int = 0
    vmflags: frozenset = frozenset()

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def readable(self) -> bool:
        return self.perms[0] == "r"

    @property
    def writable(self) -> bool:
        return self.perms[1] == "w"

    @property
    def shared(self) -> bool:
        return self.perms[3] == "s"

    @property
    def file_backed(self) -> bool:
        return self.inode != 0 and not self.path.startswith("[")

    @property
    def elf_flags(self) -> int:
        return (4 if self.perms[0] == "r" else 0) | (2 if self.perms[1] == "w" else 0) | (1 if self.perms[2] == "x" else 0)


@dataclasses.dataclass
class Segment:
    """One PT_LOAD: [start, end) of the target, with [dump_start, end) taken into the file.

    dump_start == end means nothing is taken (the mapping is only described). ``anon`` marks
    memory whose never-touched pages read as zero, so pagemap may skip them.
    """

    start: int
    end: int
    flags: int
    dump_start: int
    anon: bool
    category: str  # stacks | heap | images | shared | metadata

    @property
    def dump_bytes(self) -> int:
        return self.end - self.dump_start


def parse_smaps(text: str) -> List[Region]:
    regions: List[Region] = []
    current: Optional[Region] = None
    for line in text.splitlines():
        head, _, rest = line.partition(" ")
        if "-" in head and not head.endswith(":"):
            fields = line.split(None, 5)
            lo, hi = fields[0].split("-")
            current = Region(
                start=int(lo, 16),
                end=int(hi, 16),
                perms=fields[1],
                offset=int(fields[2], 16),
                inode=int(fields[4]),
                path=fields[5] if len(fields) > 5 else "",
            )
            regions.append(current)
        elif current is not None:
            if head == "Anonymous:":
                current.anonymous = int(rest.split()[0]) * 1024
            elif head == "Rss:":
                current.rss = int(rest.split()[0]) * 1024
            elif head == "Swap:":
                current.swap = int(rest.split()[0]) * 1024
            elif head == "VmFlags:":
                current.vmflags = frozenset(rest.split())
    return regions


def read_smaps(pid: int) -> List[Region]:
    with open(f"/proc/{pid}/smaps") as f:
        return parse_smaps(f.read())


def read_coredump_filter(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/coredump_filter") as f:
            return int(f.read().strip(), 16)
    except (OSError, ValueError):
        return 0x33  # the kernel default


def kernel_rule(region: Region, bits: int, is_elf_header: bool) -> int:
    """Bytes the kernel would dump from *region* under coredump_filter *bits* (vma_dump_size)."""
    if region.path == "[vdso]":
        return region.size
    if "dd" in region.vmflags or "io" in region.vmflags:
        return 0
    if "ht" in region.vmflags:
        wanted = CoreFilter.HugeShared if region.shared else CoreFilter.HugePrivate
        return region.size if bits & wanted else 0
    if region.shared:
        deleted_or_anon = not region.file_backed or region.path.endswith(" (deleted)")
        wanted = CoreFilter.AnonShared if deleted_or_anon else CoreFilter.FileShared
        return region.size if bits & wanted else 0
    if (not region.file_backed or region.anonymous) and bits & CoreFilter.AnonPrivate:
        return region.size  # private memory that has (or is nothing but) anonymous pages
    if not region.file_backed:
        return 0
    if bits & CoreFilter.FilePrivate:
        return region.size
    if bits & CoreFilter.ElfHeaders and is_elf_header:
        return PAGE
    return 0


def elf_header_starts(regions: Sequence[Region], pid: Optional[int] = None) -> Dict[int, bool]:
    """Start address -> whether the mapping is a file's first page holding an ELF header.

    Without *pid* (the plan) a readable offset-0 file mapping is assumed to be ELF when its path
    is a shared object or executable mapped executable elsewhere; with *pid* the magic is read.
    """
    out: Dict[int, bool] = {}
    for r in regions:
        if not (r.file_backed and r.offset == 0 and r.readable):
            continue
        if pid is None:
            out[r.start] = any(o.path == r.path and "x" in o.perms for o in regions)
        else:
            try:
                with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
                    mem.seek(r.start)
                    out[r.start] = mem.read(4) == b"\x7fELF"
            except OSError:
                out[r.start] = False
    return out


def _category(region: Region) -> str:
    if region.shared:
        return "shared"
    if region.file_backed and not region.anonymous:
        return "images"
    return "heap"


def select(
    regions: Sequence[Region],
    kind: DumpKind,
    *,
    filter_bits: Optional[int],
    stack_pointers: Iterable[int],
    keep_pages: Iterable[int],
    exe_paths: Sequence[str],
    elf_headers: Dict[int, bool],
) -> List[Segment]:
    """The PT_LOAD segments for *kind* (or raw *filter_bits*), in address order.

    *stack_pointers*: each thread's stack pointer; the live part of its stack is always taken.
    *keep_pages*: addresses whose pages the debugger needs (the dynamic linker's link_map chain).
    *exe_paths*: the executable and the dynamic loader, whose writable data mini dumps keep.
    """
    sps = sorted(stack_pointers)
    keep = sorted({p - p % PAGE for p in keep_pages})
    segments: List[Segment] = []
    for r in regions:
        if r.path in SPECIAL_SKIP:
            continue
        flags = r.elf_flags
        anon = not r.file_backed and not r.shared
        if not r.readable or "dd" in r.vmflags or "io" in r.vmflags:
            segments.append(Segment(r.start, r.end, flags, r.end, anon, "metadata"))
            continue
        is_header = elf_headers.get(r.start, False)
        if filter_bits is not None:
            taken = kernel_rule(r, filter_bits, is_header)
            if taken == PAGE and r.size > PAGE:
                segments.extend(_header_split(r, flags))
            else:
                segments.append(Segment(r.start, r.end, flags, r.start if taken else r.end, anon, _category(r)))
            continue
        if kind is DumpKind.FULL:
            segments.append(Segment(r.start, r.end, flags, r.start, anon, _category(r)))
            continue
        sp = next((s for s in sps if r.start <= s < r.end), None)
        if sp is not None:
            cut = max(r.start, (sp - RED_ZONE) - (sp - RED_ZONE) % PAGE)
            if cut > r.start:
                segments.append(Segment(r.start, cut, flags, cut, anon, "stacks"))
            segments.append(Segment(cut, r.end, flags, cut, anon, "stacks"))
            continue
        if r.path == "[vdso]":
            segments.append(Segment(r.start, r.end, flags, r.start, False, "metadata"))
            continue
        if kind is DumpKind.MINIPLUS and not r.shared and (not r.file_backed or (r.writable and r.anonymous)):
            segments.append(Segment(r.start, r.end, flags, r.start, anon, "heap"))
            continue
        if kind in (DumpKind.MINI, DumpKind.MINIPLUS):
            if r.file_backed and r.writable and not r.shared and r.path in exe_paths:
                segments.append(Segment(r.start, r.end, flags, r.start, False, "images"))
                continue
            if is_header:
                segments.extend(_header_split(r, flags))
                continue
        wanted = [p for p in keep if r.start <= p < r.end]
        if wanted:
            segments.extend(_page_pieces(r, flags, anon, wanted))
            continue
        segments.append(Segment(r.start, r.end, flags, r.end, anon, _category(r)))
    return segments


def _header_split(r: Region, flags: int) -> List[Segment]:
    """Take only the first page (ELF header and build-id note) of a file mapping."""
    out = [Segment(r.start, r.start + PAGE, flags, r.start, False, "metadata")]
    if r.size > PAGE:
        out.append(Segment(r.start + PAGE, r.end, flags, r.end, False, "images"))
    return out


def _page_pieces(r: Region, flags: int, anon: bool, pages: List[int]) -> List[Segment]:
    """Split *r* so that only the given pages are taken (each page its own PT_LOAD)."""
    out: List[Segment] = []
    cursor = r.start
    for page in pages:
        if page > cursor:
            out.append(Segment(cursor, page, flags, page, anon, "metadata"))
        out.append(Segment(page, page + PAGE, flags, page, False, "metadata"))
        cursor = page + PAGE
    if cursor < r.end:
        out.append(Segment(cursor, r.end, flags, r.end, anon, "metadata"))
    return out



def estimate_bytes(segments: Sequence[Segment], regions: Sequence[Region], threads: int) -> Dict[str, int]:
    """Bytes on disk per category for the taken *segments*, from smaps alone (no memory is read).

    Anonymous memory counts only its resident and swapped share (untouched pages become holes);
    file-backed memory counts whole, as the writer reads all of it.
    """
    parts: Dict[str, int] = {"stacks": 0, "heap": 0, "images": 0, "shared": 0, "metadata": 0}
    starts = [r.start for r in regions]
    taken = [s for s in segments if s.dump_start == s.start]
    for seg in taken:
        size = seg.end - seg.start
        if seg.anon:
            i = bisect.bisect_right(starts, seg.start) - 1
            r = regions[i]
            share = min(1.0, (r.rss + r.swap) / r.size) if r.size else 1.0
            size = int(size * share) // PAGE * PAGE
        parts[seg.category] += size
    files = [r for r in regions if r.file_backed]
    # ELF and program headers, and the notes: per thread PRSTATUS + FPREGSET + XSTATE.
    notes = 1024 + threads * (336 + 512 + 2696 + 80) + sum(24 + len(r.path) + 1 for r in files) + 512
    parts["metadata"] += 64 + 56 * (len(taken) + 1) + notes + PAGE
    return parts
