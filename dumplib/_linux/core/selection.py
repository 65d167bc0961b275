"""Which memory a Linux core holds: the target's mappings (proc/maps.py) chosen per kind like the kernel.

The same selection serves the plan (and so the size estimate) and the writer, so the two cannot
drift: the writer re-reads the maps once the target is stopped and applies these same rules.
"""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")


import bisect

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import AbstractSet, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..._bounded import blocking
from ...kinds import DumpKind
from ..._record import field, record, replace
from ..proc.maps import PAGE, SPECIAL_SKIP, Region

#: The x86-64 red zone below the stack pointer that leaf functions may use.
RED_ZONE = 128


@record()
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
    region: Optional[Region] = field(default=None, repr=False, compare=False)
    #: Not taken, yet given a PT_LOAD that stores nothing (as the kernel's cores do): readers such as
    #: py-spy find a mapped object's code by a PT_LOAD at its NT_FILE start; gdb reads it from the file.
    describe: bool = False



def kernel_rule(region: Region, bits: int, is_elf_header: bool) -> int:
    """Bytes the kernel would dump from *region* under coredump_filter *bits* (vma_dump_size)."""
    from .corefilter import CoreFilter  # raw masks only: building the IntFlag is start-up a kind's dump need not pay
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
                out[r.start] = blocking(mem.read, 4) == b"\x7fELF"  # takes the mmap lock: bounded where asked
            except OSError:
                out[r.start] = False
    return out


def _category(region: Region) -> str:
    if region.shared:
        return "shared"
    if region.file_backed and not region.anonymous:
        return "images"
    return "heap"


#: Bytes of loaded objects' writable file mappings (.data, .got) taken whole, in all: libpython's are 1 MiB.
WHOLE_DATA_BYTES = 64 << 20
#: Bytes of loaded objects' .bss stored whole (untouched pages too), in all: CPython's is under 1 MiB.
WHOLE_BSS_BYTES = 16 << 20


def select(
    regions: Sequence[Region],
    kind: DumpKind,
    *,
    filter_bits: Optional[int],
    stack_pointers: Iterable[int],
    keep_pages: Iterable[int],
    exe_paths: Sequence[str],
    elf_headers: Dict[int, bool],
    image_ends: Iterable[int] = (),
    keep_ranges: Iterable[Tuple[int, int]] = (),
) -> List[Segment]:
    """The PT_LOAD segments for *kind* (or raw *filter_bits*), in address order.

    *stack_pointers*: each thread's stack pointer; the live part of its stack is always taken.
    *keep_pages*: addresses whose pages the debugger needs (the dynamic linker's link_map chain).
    *exe_paths*: the loaded objects (the executable, the dynamic loader, every object of the link_map
    chain), whose writable data (and the .bss mapped right after it) mini dumps keep, as Windows'
    DataSegs does: thread libraries and TLS lookups read them. *image_ends*: where each loaded
    object's memory image ends (its last PT_LOAD's end), which bounds its .bss. *keep_ranges*: [start,
    end) byte ranges the debugger needs, taken exactly (each thread's TLS: a DTV lies in the heap).
    """
    sps = sorted(stack_pointers)
    keep = _merged([(p - p % PAGE, p - p % PAGE + PAGE) for p in keep_pages] + list(keep_ranges))
    ends = sorted(image_ends)
    segments: List[Segment] = []
    below: Optional[Region] = None
    whole_left = WHOLE_BSS_BYTES
    data_left = WHOLE_DATA_BYTES
    objects = frozenset(exe_paths)  # looked up for every mapping: the link_map may name thousands
    for r in regions:
        if r.path in SPECIAL_SKIP:
            continue
        bss_end = _bss_end(below, r, objects, ends) if kind in (DumpKind.MINI, DumpKind.MINIPLUS) else None
        stack = r.path == "[stack]" or (below is not None and below.end == r.start and below.perms.startswith("---"))
        below = r
        if bss_end is not None and filter_bits is None:
            # Stored whole, untouched pages too: py-spy reads an object's .data and .bss as one run of the file.
            # Only up to WHOLE_BSS_BYTES in all: past it (a target's own choice) untouched pages are described.
            whole = bss_end - r.start <= whole_left
            whole_left -= bss_end - r.start if whole else 0
            # The kernel may have merged the .bss with an anonymous mapping made later: that part goes by the rules.
            chosen = [Segment(r.start, bss_end, r.elf_flags, r.start, not whole, "images")]
            if bss_end < r.end:
                chosen += _choose(replace(r, start=bss_end), kind, filter_bits, sps, keep, objects,
                                  elf_headers)
        elif r.file_backed and r.writable and not r.shared and r.path in objects and filter_bits is None:
            # A loaded object's data, taken whole up to WHOLE_DATA_BYTES in all: the link_map that names
            # the objects is the target's to write, and may claim any file it mapped.
            whole = r.size <= data_left
            data_left -= r.size if whole else 0
            chosen = _choose(r, kind, filter_bits, sps, keep, objects if whole else frozenset(), elf_headers, stack)
        else:
            chosen = _choose(r, kind, filter_bits, sps, keep, objects, elf_headers, stack)
        for seg in chosen:
            seg.region = r
            segments.append(seg)
    return segments


def _bss_end(below: Optional[Region], r: Region, exe_paths: AbstractSet[str], ends: List[int]) -> Optional[int]:
    """Where the zero-filled tail (.bss) the loader mapped right after a loaded object's data ends in *r*
    (its image's end, page-rounded); None when *r* is no such tail."""
    if below is None or not (below.end == r.start and below.path in exe_paths and below.writable
                             and not below.shared and not r.file_backed and not r.path and r.writable
                             and not r.shared):
        return None
    i = bisect.bisect_right(ends, r.start)
    if i == len(ends) or ends[i] > r.end:
        return None
    return min(r.end, ends[i] + (-ends[i] % PAGE))


def _merged(ranges: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """*ranges* sorted, with overlapping or touching ones joined."""
    out: List[Tuple[int, int]] = []
    for lo, hi in sorted(r for r in ranges if r[0] < r[1]):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _kept(keep: List[Tuple[int, int]], r: Region) -> List[Tuple[int, int]]:
    """The parts of *r* that *keep* (merged, sorted) holds."""
    i = bisect.bisect_left(keep, (r.start,))
    if i and keep[i - 1][1] > r.start:
        i -= 1
    out = []
    while i < len(keep) and keep[i][0] < r.end:
        out.append((max(keep[i][0], r.start), min(keep[i][1], r.end)))
        i += 1
    return out


def _choose(r: Region, kind: DumpKind, filter_bits: Optional[int], sps: List[int], keep: List[Tuple[int, int]],
            exe_paths: AbstractSet[str], elf_headers: Dict[int, bool], stack: bool = False) -> List[Segment]:
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
    heap = kind is DumpKind.MINIPLUS and not r.shared and (
        not r.file_backed or (r.writable and r.anonymous) or "ht" in r.vmflags
    )  # private hugetlb too, as the kernel's default coredump_filter (0x33) takes it
    if sp is not None:
        cut = max(r.start, (sp - RED_ZONE) - (sp - RED_ZONE) % PAGE)
        # A stack inside the heap (a Go goroutine's, in its arena) keeps miniplus from dropping the heap below it;
        # a thread's own stack (above a guard page, or [stack]) is dead below its stack pointer.
        heap = heap and not stack
        below = [Segment(r.start, cut, flags, r.start if heap else cut, anon, "heap" if heap else "stacks")]
        return (below if cut > r.start else []) + [Segment(cut, r.end, flags, cut, anon, "stacks")]
    if r.path == "[vdso]":
        return [Segment(r.start, r.end, flags, r.start, False, "metadata")]
    if heap:
        return [Segment(r.start, r.end, flags, r.start, anon, "heap")]
    if kind in (DumpKind.MINI, DumpKind.MINIPLUS):
        if r.file_backed and r.writable and not r.shared and r.path in exe_paths:
            return [Segment(r.start, r.end, flags, r.start, False, "images")]
        if is_header:
            return _header_split(r, flags)
    wanted = _kept(keep, r)
    if kind in (DumpKind.MINI, DumpKind.MINIPLUS):
        if r.file_backed and "x" in r.perms and not r.shared and not wanted:
            return [Segment(r.start, r.end, flags, r.end, False, "images", describe=True)]
    if wanted:
        return _page_pieces(r, flags, anon, wanted)
    return [Segment(r.start, r.end, flags, r.end, anon, _category(r))]


def _header_split(r: Region, flags: int) -> List[Segment]:
    """Take only the first page (ELF header and build-id note) of a file mapping."""
    out = [Segment(r.start, r.start + PAGE, flags, r.start, False, "metadata")]
    if r.size > PAGE:
        out.append(Segment(r.start + PAGE, r.end, flags, r.end, False, "images"))
    return out


def _page_pieces(r: Region, flags: int, anon: bool, ranges: List[Tuple[int, int]]) -> List[Segment]:
    """Split *r* so that only the given [start, end) ranges are taken (each its own PT_LOAD)."""
    out: List[Segment] = []
    cursor = r.start
    for lo, hi in ranges:
        if lo > cursor:
            out.append(Segment(cursor, lo, flags, lo, anon, "metadata"))
        out.append(Segment(lo, hi, flags, lo, False, "metadata"))
        cursor = hi
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


def paths_holding(regions: Sequence[Region], addresses: Iterable[int]) -> List[str]:
    """Paths of the file mappings that hold *addresses* (each loaded object's dynamic section...)."""
    starts = [r.start for r in regions]
    out: List[str] = []
    for a in addresses:
        i = bisect.bisect_right(starts, a) - 1
        if i >= 0 and regions[i].start <= a < regions[i].end and regions[i].file_backed:
            out.append(regions[i].path)
    return out


#: What the estimate counts for TLS read once the target is stopped, when thread pointers are known:
#: the main thread's control block, static TLS and DTV (in the loader's own allocations), and each
#: other thread's DTV (malloc'ed); other threads' control blocks lie at their stacks' tops, counted there.
#: thread_areas_within() holds what is written to it, whatever the target wrote at its thread pointers.
def thread_area_allowance(threads: int) -> int:
    return 16 * PAGE + threads * PAGE


#: Bytes charged for each range thread_areas_within() keeps beyond its data: its PT_LOAD and the gap's.
RANGE_COST = 192


def thread_areas_within(ranges: Iterable[Tuple[int, int]], regions: Sequence[Region], taken: Sequence[Segment],
                        budget: int) -> List[Tuple[int, int]]:
    """The parts of *ranges* (most wanted first) in private anonymous memory that *taken* does not store
    already, cut off when they (with RANGE_COST each) reach *budget* bytes.

    A target writes its own thread pointer, DTV and TLS block addresses: what they add to a core stays
    within the allowance the estimate counted, and never lies in a mapped file (whose page may need I/O).
    """
    anon = [(r.start, r.end) for r in regions if r.readable and not r.file_backed and not r.shared
            and r.path not in SPECIAL_SKIP and "io" not in r.vmflags]
    stored = _merged([(s.dump_start, s.end) for s in taken if s.dump_start < s.end and not s.describe])
    # Where a kept range may lie: anonymous memory minus what is stored anyway.
    free: List[Tuple[int, int]] = []
    j = 0
    for lo, hi in anon:
        while j < len(stored) and stored[j][1] <= lo:
            j += 1
        k = j
        while lo < hi:
            if k < len(stored) and stored[k][0] < hi:
                if stored[k][0] > lo:
                    free.append((lo, stored[k][0]))
                lo = max(lo, stored[k][1])
                k += 1
            else:
                free.append((lo, hi))
                break
    starts = [f[0] for f in free]
    out: List[Tuple[int, int]] = []
    left = budget
    for lo, hi in ranges:
        i = max(0, bisect.bisect_right(starts, lo) - 1)
        while i < len(free) and free[i][0] < hi:
            a, b = max(lo, free[i][0]), min(hi, free[i][1])
            i += 1
            if a >= b:
                continue
            if left < RANGE_COST + 1:
                return out
            b = min(b, a + left - RANGE_COST)
            out.append((a, b))
            left -= RANGE_COST + (b - a)
    return out


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
