"""What a target writes at its thread pointer (DTV, TLS block addresses) adds to a mini core only within the
estimate's allowance, only from private anonymous memory, and nothing for memory the core stores anyway."""
from __future__ import annotations

import struct
import sys

import pytest

if not sys.platform.startswith("linux"):  # dumplib._linux raises ImportError elsewhere (its guard)
    pytest.skip("tests of dumplib._linux, which imports on Linux only", allow_module_level=True)

from dumplib.formats import linkmap
from dumplib._linux.core import selection
from dumplib._linux.proc import maps
from dumplib.kinds import DumpKind

PAGE = maps.PAGE
HEAP = maps.Region(0x10000000, 0x10000000 + (1 << 30), "rw-p", 0, 0, "")  # 1 GiB, untouched
LIB = maps.Region(0x7F0000000000, 0x7F0000100000, "rw-p", 0, 1234, "/slow/fuse/file")
VVAR = maps.Region(0x7FFF00000000, 0x7FFF00004000, "r--p", 0, 0, "[vvar]")
STACK = maps.Region(0x7FFF10000000, 0x7FFF10100000, "rw-p", 0, 0, "[stack]")
REGIONS = [HEAP, LIB, VVAR, STACK]


def _taken(sp: int) -> list:
    return selection.select(REGIONS, DumpKind.MINI, filter_bits=None, stack_pointers=[sp], keep_pages=[],
                       exe_paths=[], elf_headers={})


def _forged(tp: int, dtv: int, blocks: list) -> dict:
    """Memory at a forged thread pointer: a DTV claiming 2^60 slots, pointing at *blocks*."""
    slots = b"".join(struct.pack("<QQ", b, 0) for b in blocks)
    return {tp: struct.pack("<QQ", tp, dtv), dtv - 16: struct.pack("<Q", 1 << 60), dtv + 16: slots}


def _reader(memory: dict):
    def read(address: int, length: int):
        for at, data in memory.items():
            if at <= address < at + len(data):
                return data[address - at : address - at + length]
        return None
    return read


def test_a_forged_dtv_adds_no_more_than_the_allowance():
    tp = HEAP.start + (512 << 20)
    blocks = [tp - (1 << 20)] + [HEAP.start + k * 2 * PAGE for k in range(1, 4097)]
    ranges = linkmap.thread_area_ranges(tp, _reader(_forged(tp, tp + 65536, blocks)))
    assert sum(hi - lo for lo, hi in ranges) > 1 << 20  # what the target asks for
    budget = selection.thread_area_allowance(1)
    kept = selection.thread_areas_within(ranges, REGIONS, _taken(STACK.end - 64), budget)
    # Each kept range is written with its PT_LOAD and the gap's after it: two 56-byte program headers.
    assert kept and sum(hi - lo + 2 * 56 for lo, hi in kept) <= budget
    assert kept[0] == (tp, tp + linkmap.TCB_BYTES)  # the control block comes first
    segs = selection.select(REGIONS, DumpKind.MINI, filter_bits=None, stack_pointers=[STACK.end - 64], keep_pages=[],
                       exe_paths=[], elf_headers={}, keep_ranges=kept)
    extra = [s for s in segs if s.dump_start == s.start and s.region is HEAP]
    assert sum(s.end - s.start for s in extra) + 56 * len([s for s in segs if s.region is HEAP]) <= budget


def test_a_dtv_of_4096_blocks_makes_a_bounded_number_of_ranges():
    """Thousands of threads may share one forged DTV: what each makes stays a handful of ranges."""
    tp = HEAP.start + (512 << 20)
    blocks = [HEAP.start + k * 2 * PAGE for k in range(1, 4097)]
    ranges = linkmap.thread_area_ranges(tp, _reader(_forged(tp, tp + 65536, blocks)))
    assert 2 < len(ranges) <= 2 + 64, len(ranges)


def test_ranges_in_a_mapped_file_or_vvar_are_never_kept():
    ranges = [(LIB.start, LIB.start + PAGE), (VVAR.start, VVAR.start + 64), (LIB.end - 8, HEAP.start)]
    assert selection.thread_areas_within(ranges, REGIONS, _taken(STACK.end - 64), 1 << 30) == []


def test_ranges_the_core_stores_anyway_cost_nothing():
    sp = STACK.end - 8 * PAGE
    inside = [(STACK.end - 4 * PAGE, STACK.end - 2 * PAGE)] * 1000  # a thread's TCB and static TLS, above its sp
    tcb = [(HEAP.start, HEAP.start + 64)]
    assert selection.thread_areas_within(inside + tcb, REGIONS, _taken(sp), 64 + selection.RANGE_COST) == tcb


def test_thread_pointer_reads_reach_only_private_anonymous_memory(tmp_path):
    """A forged thread pointer into a mapped file (whose page may wait on a stalled filesystem) reads nothing."""
    import ctypes
    import mmap
    import os

    from dumplib._linux import backend

    path = tmp_path / "mapped"
    path.write_bytes(b"F" * mmap.PAGESIZE)
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), mmap.PAGESIZE, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
    anon = mmap.mmap(-1, 2 * mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    anon[:4] = b"ANON"
    try:
        buf = (ctypes.c_char * 1).from_buffer(anon)
        anon_at = ctypes.addressof(buf)
        del buf
        maps_text = open("/proc/self/maps").read()
        file_at = next(int(line.split("-")[0], 16) for line in maps_text.splitlines() if line.endswith(str(path)))
        regions = maps.parse_smaps(open("/proc/self/smaps").read())
        read = backend._anonymous_reader(os.getpid(), regions)
        assert read(anon_at, 4) == b"ANON"
        assert read(file_at, 4) is None
        end = next(r.end for r in regions if r.start <= anon_at < r.end)
        assert len(read(end - 8, 4096) or b"") == 8  # cut at the mapping's end
    finally:
        mapped.close()
        anon.close()
