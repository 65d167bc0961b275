"""Which memory a Linux core holds: /proc/PID/smaps parsed, then chosen per kind like the kernel.

The same selection serves the plan (and so the size estimate) and the writer, so the two cannot
drift: the writer re-reads the maps once the target is stopped and applies these same rules.
"""
from __future__ import annotations

import bisect
import dataclasses
import re
from typing import Callable, Dict, Iterable, List, Optional, Sequence

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
    dev: str = "00:00"  # major:minor in hex, as maps prints it
    hugetlb: int = 0  # bytes of hugetlb pages (smaps counts them apart from Rss)
    #: Backed by a file (or a shared-memory object): set once, as planning asks it of every mapping often.
    file_backed: bool = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.file_backed = self.inode != 0 and not self.path.startswith("[")

    @property
    def present(self) -> int:
        """Bytes of this mapping that hold pages (resident, swapped or hugetlb): the rest was never touched."""
        return self.rss + self.swap + self.hugetlb

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
    def elf_flags(self) -> int:
        return (4 if self.perms[0] == "r" else 0) | (2 if self.perms[1] == "w" else 0) | (1 if self.perms[2] == "x" else 0)


@dataclasses.dataclass
class Segment:
    """One PT_LOAD: [start, end) of the target, with [dump_start, end) taken into the file.

    dump_start == end means nothing is taken (the mapping is only described). ``anon`` marks
    private memory whose never-touched pages read as zero, so pagemap may skip them.
    """

    start: int
    end: int
    flags: int
    dump_start: int
    anon: bool
    category: str  # stacks | heap | images | shared | metadata
    region: Optional[Region] = dataclasses.field(default=None, repr=False, compare=False)



_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) ([0-9a-f]+) (\S+) (\d+) *(.*)$", re.M)
_SIZES = (("\nRss:", 0), ("\nAnonymous:", 1), ("\nShared_Hugetlb:", 3), ("\nPrivate_Hugetlb:", 3), ("\nSwap:", 2))


def parse_smaps(text: str) -> List[Region]:
    """Regions of /proc/PID/smaps, with the fields dumplib uses.

    A process with 60 000 mappings has 45 MB of smaps: the text is cut into blocks at each
    mapping's last line (VmFlags) and fields are found with str.find, not read line by line.
    """
    blocks = text.split("\nVmFlags:")
    if text.count("\nSize:") != len(blocks) - 1:  # not one VmFlags line per mapping (old kernel, odd text)
        return _parse_smaps_by_header(text)
    regions: List[Region] = []
    for i, block in enumerate(blocks):
        if i:
            cut = block.find("\n")
            regions[-1].vmflags = frozenset(block[: cut if cut >= 0 else len(block)].split())
            if cut < 0:
                break
            block = block[cut + 1 :]
        m = _HEADER.match(block)
        if m is None:
            break
        regions.append(_region(m, block))
    return regions


def _parse_smaps_by_header(text: str) -> List[Region]:
    """Older kernels without VmFlags: blocks start at each header line."""
    starts = [m.start() for m in _HEADER.finditer(text)] + [len(text)]
    regions = []
    for lo, hi in zip(starts, starts[1:]):
        block = text[lo:hi]
        m = _HEADER.match(block)
        if m is not None:
            regions.append(_region(m, block))
    return regions


def _region(m: "re.Match[str]", block: str) -> Region:
    start, end, perms, offset, dev, inode, path = m.groups()
    sizes = [0, 0, 0, 0]  # rss, anonymous, swap, hugetlb
    head = m.end()
    for label, slot in _SIZES:  # each searched from the top: the kernel's field order is not relied on
        found = block.find(label, head)
        if found >= 0:
            sizes[slot] += int(block[found + len(label) : block.find(" kB", found)]) * 1024
    r = Region(int(start, 16), int(end, 16), perms, int(offset, 16), int(inode), path,
               anonymous=sizes[1], rss=sizes[0], swap=sizes[2], dev=dev, hugetlb=sizes[3])
    at = block.find("\nVmFlags:", head)  # only in blocks cut at headers
    if at >= 0:
        stop = block.find("\n", at + 1)
        r.vmflags = frozenset(block[at + 9 : stop if stop >= 0 else len(block)].split())
    return r


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


def elf_header_starts(regions: Sequence[Region], pid: Optional[int] = None,
                      may_read: Optional[Callable[[Region], bool]] = None) -> Dict[int, bool]:
    """Start address -> whether the mapping is a file's first page holding an ELF header.

    Without *pid* (the plan) a readable offset-0 file mapping is assumed to be ELF when its path
    is a shared object or executable mapped executable elsewhere; with *pid* the magic is read,
    only where *may_read(region)* allows (a first page not resident on a file system is not
    faulted in: it is not taken either).
    """
    candidates = [r for r in regions if r.file_backed and r.offset == 0 and r.readable]
    if pid is None:
        executable = {r.path for r in regions if "x" in r.perms}  # one pass: linear in the mappings
        return {r.start: r.path in executable for r in candidates}
    out: Dict[int, bool] = {}
    try:
        mem = open(f"/proc/{pid}/mem", "rb", buffering=0)
    except OSError:
        return {r.start: False for r in candidates}
    with mem:
        for r in candidates:
            if may_read is not None and not may_read(r):
                out[r.start] = False
                continue
            try:
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
        for seg in _choose(r, kind, filter_bits, sps, keep, exe_paths, elf_headers):
            seg.region = r
            segments.append(seg)
    return segments


def _choose(r: Region, kind: DumpKind, filter_bits: Optional[int], sps: List[int], keep: List[int],
            exe_paths: Sequence[str], elf_headers: Dict[int, bool]) -> List[Segment]:
    """The segments of one mapping (see select); lookups are by bisection so planning stays linear."""
    flags = r.elf_flags
    # Private memory whose untouched pages read as zero: reading them would only map the zero
    # page (or, for hugetlb, allocate a huge page), so pagemap decides what is read.
    # Not [vdso]: the kernel's code there reads as itself, not zero, though its pages are mapped
    # only once touched (a core missing one keeps gdb from unwinding through it).
    anon = not r.shared and (not r.file_backed or "ht" in r.vmflags) and r.path != "[vdso]"
    if not r.readable or "dd" in r.vmflags or "io" in r.vmflags:
        return [Segment(r.start, r.end, flags, r.end, anon, "metadata")]
    is_header = elf_headers.get(r.start, False)
    if filter_bits is not None:
        taken = kernel_rule(r, filter_bits, is_header)
        if taken == PAGE and r.size > PAGE:
            return _header_split(r, flags)
        return [Segment(r.start, r.end, flags, r.start if taken else r.end, anon, _category(r))]
    if kind is DumpKind.FULL:
        return [Segment(r.start, r.end, flags, r.start, anon, _category(r))]
    i = bisect.bisect_left(sps, r.start)
    sp = sps[i] if i < len(sps) and sps[i] < r.end else None
    if sp is not None:
        cut = max(r.start, (sp - RED_ZONE) - (sp - RED_ZONE) % PAGE)
        below = [Segment(r.start, cut, flags, cut, anon, "stacks")] if cut > r.start else []
        return below + [Segment(cut, r.end, flags, cut, anon, "stacks")]
    if r.path == "[vdso]":
        return [Segment(r.start, r.end, flags, r.start, False, "metadata")]
    if kind is DumpKind.MINIPLUS and not r.shared and (
        not r.file_backed or (r.writable and r.anonymous) or "ht" in r.vmflags
    ):  # private hugetlb too, as the kernel's default coredump_filter (0x33) takes it
        return [Segment(r.start, r.end, flags, r.start, anon, "heap")]
    if kind in (DumpKind.MINI, DumpKind.MINIPLUS):
        if r.file_backed and r.writable and not r.shared and r.path in exe_paths:
            return [Segment(r.start, r.end, flags, r.start, False, "images")]
        if is_header:
            return _header_split(r, flags)
    wanted = keep[bisect.bisect_left(keep, r.start) : bisect.bisect_left(keep, r.end)]
    if wanted:
        return _page_pieces(r, flags, anon, wanted)
    return [Segment(r.start, r.end, flags, r.end, anon, _category(r))]


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



def estimate_bytes(segments: Sequence[Segment], regions: Sequence[Region], threads: int, *,
                   data_bytes: Optional[Callable[[Segment], int]] = None,
                   xstate_size: int = 2696) -> Dict[str, int]:
    """Bytes on disk per category for the taken *segments*, erring high; no memory is read.

    *data_bytes(segment)* is what the writer stores of a segment (present pages of private memory,
    data of shared objects, nothing past a mapped file's end); without it, private memory counts
    its present pages from smaps and the rest counts whole. *xstate_size*: this CPU's XSAVE note.
    """
    parts: Dict[str, int] = {"stacks": 0, "heap": 0, "images": 0, "shared": 0, "metadata": 0}
    taken = [s for s in segments if s.dump_start == s.start]
    for seg in taken:
        parts[seg.category] += data_bytes(seg) if data_bytes else _present_bytes(seg)
    files = [r for r in regions if r.file_backed]
    # Notes: per thread PRSTATUS, FPREGSET and XSTATE (each with a 20-byte note header and name).
    per_thread = 3 * 20 + 336 + 512 + xstate_size
    notes = 2048 + threads * per_thread + sum(24 + len(r.path.encode("utf-8", "surrogateescape")) + 1 for r in files)
    # Program headers: a taken segment is split at its untouched gaps; two loads each is typical.
    # A block per 64 segments covers the filesystem's extent blocks for a file of many runs.
    parts["metadata"] += 64 + 56 * (2 * len(taken) + 1) + notes + PAGE * (1 + len(taken) // 64)
    return parts


def unclaimed_stack_bytes(regions: Sequence[Region], stack_pointers: Iterable[int]) -> int:
    """Present bytes of stack-looking mappings that hold no known stack pointer.

    The plan knows the stack pointer only of threads blocked in a system call; a running thread's
    live stack is taken by the writer all the same, so its mapping is counted whole here (the
    estimate errs high). A thread stack is private anonymous read/write memory just above a
    PROT_NONE guard (glibc, musl, Go's runtime threads) or the main [stack].
    """
    sps = sorted(stack_pointers)
    total = 0
    below: Optional[Region] = None
    for r in regions:
        guarded = below is not None and below.end == r.start and below.perms.startswith("---")
        looks_like_stack = r.path == "[stack]" or (guarded and not r.file_backed and not r.shared and r.writable)
        i = bisect.bisect_left(sps, r.start)
        if looks_like_stack and not (i < len(sps) and sps[i] < r.end):
            total += min(r.size, -(-r.present // PAGE) * PAGE)
        below = r
    return total


def _present_bytes(seg: Segment) -> int:
    size = seg.end - seg.start
    if seg.anon and seg.region is not None:
        return min(size, -(-seg.region.present // PAGE) * PAGE)
    return size
