"""Pure parts of the Linux backend: smaps parsing, selection rules, notes and ELF layout."""
import struct
import sys

import pytest

if not sys.platform.startswith("linux"):  # dumplib._linux raises ImportError elsewhere (its guard)
    pytest.skip("tests of dumplib._linux, which imports on Linux only", allow_module_level=True)

from dumplib import DumpKind
from dumplib._linux.core import notes, selection
from dumplib._linux.proc import maps
from dumplib.formats import elfcore

SMAPS = """\
55d000000000-55d000001000 r--p 00000000 fe:00 11 /usr/bin/app
Rss:                   4 kB
Anonymous:             0 kB
VmFlags: rd mr mw me
55d000001000-55d000002000 rw-p 00001000 fe:00 11 /usr/bin/app
Anonymous:             4 kB
VmFlags: rd wr mr mw me ac
55d000100000-55d000200000 rw-p 00000000 00:00 0 [heap]
Anonymous:          1024 kB
VmFlags: rd wr mr mw me ac
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
Anonymous:             8 kB
VmFlags: rd wr mr mw me ac dd
7f0000100000-7f0000200000 ---p 00000000 00:00 0
VmFlags: mr mw me
7f0000200000-7f0000300000 r--s 00000000 fe:00 12 /data/shared.db
VmFlags: rd sh mr mw me
7f0000400000-7f0000402000 r--p 00000000 00:00 0 [vvar]
7f0000402000-7f0000404000 r-xp 00000000 00:00 0 [vdso]
7ffd00000000-7ffd00100000 rw-p 00000000 00:00 0 [stack]
Anonymous:            16 kB
VmFlags: rd wr mr mw me gd ac
"""


def regions():
    return maps.parse_smaps(SMAPS)


def taken(kind, **kw):
    args = dict(filter_bits=None, stack_pointers=[0x7FFD000FF000], keep_pages=[], exe_paths=["/usr/bin/app"],
                elf_headers={0x55D000000000: True})
    args.update(kw)
    segs = selection.select(regions(), kind, **args)
    return {(s.start, s.end) for s in segs if s.dump_start == s.start}


def test_parse_smaps_fields():
    r = regions()
    assert len(r) == 9
    heap = r[2]
    assert heap.path == "[heap]" and heap.anonymous == 1024 * 1024 and heap.size == 0x100000
    assert "dd" in r[3].vmflags and not r[4].readable and r[5].shared and r[5].file_backed


def test_full_takes_everything_readable_but_never_dontdump_vvar_or_protnone():
    t = taken(DumpKind.FULL)
    assert (0x55D000100000, 0x55D000200000) in t and (0x7F0000200000, 0x7F0000300000) in t
    assert not any(s == 0x7F0000000000 or s == 0x7F0000100000 or s == 0x7F0000400000 for s, _ in t)


def test_mini_takes_live_stack_vdso_headers_and_exe_data_not_heap():
    t = taken(DumpKind.MINI)
    assert (0x7FFD000FE000, 0x7FFD00100000) in t  # from just below the stack pointer (red zone) up
    assert (0x7F0000402000, 0x7F0000404000) in t  # [vdso]
    assert (0x55D000000000, 0x55D000001000) in t  # ELF header page
    assert (0x55D000001000, 0x55D000002000) in t  # the executable's writable data
    assert not any(s == 0x55D000100000 for s, _ in t)


def test_miniplus_adds_private_anonymous_memory_only():
    t = taken(DumpKind.MINIPLUS)
    assert (0x55D000100000, 0x55D000200000) in t
    assert not any(s == 0x7F0000200000 for s, _ in t)  # shared file mapping stays out


def test_triage_takes_stacks_vdso_and_kept_pages_only():
    t = taken(DumpKind.TRIAGE, keep_pages=[0x55D000100010, 0x55D000100020, 0x55D000150000])
    assert (0x55D000100000, 0x55D000101000) in t and (0x55D000150000, 0x55D000151000) in t
    assert not any(s == 0x55D000000000 for s, _ in t)
    assert sum(e - s for s, e in t) == 0x2000 + 0x2000 + 0x2000  # stack top, vdso, two kept pages


def test_raw_filter_follows_the_kernel_rules():
    anon_only = taken(DumpKind.MINI, filter_bits=0x1)
    assert (0x55D000100000, 0x55D000200000) in anon_only  # anonymous private
    assert (0x55D000001000, 0x55D000002000) in anon_only  # file private with anonymous (COW) pages
    assert not any(s == 0x7F0000200000 for s, _ in anon_only)
    shared = taken(DumpKind.MINI, filter_bits=0x8)
    assert (0x7F0000200000, 0x7F0000300000) in shared


def test_note_padding():
    n = notes.note(b"CORE", 1, b"abc")
    namesz, descsz, ntype = struct.unpack_from("<III", n)
    assert (namesz, descsz, ntype) == (5, 3, 1) and len(n) == 12 + 8 + 4


def test_amd_xstate_is_relaid_in_intel_layout():
    xcr0 = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 9)  # x87, SSE, AVX, PKRU
    amd = bytearray(2440)
    amd[notes.XCR0_OFFSET : notes.XCR0_OFFSET + 8] = xcr0.to_bytes(8, "little")
    amd[576:832] = b"\xaa" * 256  # YMM upper halves
    amd[2432:2440] = b"\x55" * 8  # PKRU
    intel = notes.intel_xstate(bytes(amd))
    assert len(intel) == 2696 and intel[576:832] == b"\xaa" * 256 and intel[2688:2696] == b"\x55" * 8
    assert notes.intel_xstate(intel) == intel  # already Intel-sized: untouched


def test_layout_and_reader_round_trip(tmp_path):
    loads = [(0x1000, 0x2000, 5, 0x2000), (0x8000, 0x1000, 6, 0x1000)]
    note_bytes = notes.note(b"CORE", elfcore.NT_PRSTATUS, bytes(336))
    header, offsets, end = elfcore.layout(loads, len(note_bytes))
    assert all(o % 4096 == 0 for o in offsets) and end == offsets[-1] + 0x1000
    path = tmp_path / "c.core"
    with open(path, "wb") as f:
        f.write(header + note_bytes)
        f.seek(offsets[1])
        f.write(b"hello")
        f.truncate(end)
    core = elfcore.read_elfcore(str(path))
    assert core.complete and [ld.vaddr for ld in core.loads] == [0x1000, 0x8000] and len(core.threads) == 1
    assert core.read_memory(0x8000, 5) == b"hello" and core.read_memory(0x5000, 1) is None
    with open(path, "r+b") as f:
        f.truncate(offsets[1] + 10)
    assert not elfcore.read_elfcore(str(path)).complete


def test_pn_xnum_for_huge_mapping_counts(tmp_path):
    loads = [(0x1000 * i, 0x1000, 4, 0) for i in range(1, 0x10000)]
    header, _, end = elfcore.layout(loads, 0)
    path = tmp_path / "x.core"
    path.write_bytes(header)
    core = elfcore.read_elfcore(str(path))
    assert len(core.loads) == 0xFFFF


def test_loads_store_only_their_file_size_and_the_next_starts_right_after(tmp_path):
    import pytest

    loads = [(0x10000, 64 << 30, 6, 0x2000), (0x20_0000_0000, 0x3000, 6, 0), (0x30_0000_0000, 0x1000, 4, 0x1000)]
    header, offsets, end = elfcore.layout(loads, 100)
    assert offsets[1] == offsets[0] + 0x2000 and offsets[2] == offsets[1] and end == offsets[2] + 0x1000
    path = tmp_path / "c.core"
    path.write_bytes(header + bytes(end - len(header)))
    core = elfcore.read_elfcore(str(path))
    assert [(ld.memsz, ld.filesz) for ld in core.loads] == [(64 << 30, 0x2000), (0x3000, 0), (0x1000, 0x1000)]
    for bad in (True, -1, 0x4000):
        with pytest.raises(ValueError):
            elfcore.layout([(0x1000, 0x3000, 6, bad)], 0)


def test_smaps_is_read_as_the_kernels_maps_reads():
    # The kernel's own maps of this process, beside what parse_smaps and the by-header walk (older
    # kernels) made of its smaps: every mapping, its fields, its path (the target's bytes) whole.
    with open("/proc/self/smaps") as f:
        smaps = f.read()
    with open("/proc/self/maps") as f:
        lines = f.read().splitlines()
    parsed = maps.parse_smaps(smaps)
    by_header = maps._parse_smaps_by_header(smaps)
    assert len(parsed) == len(by_header) == len(lines) > 10
    for r, b, line in zip(parsed, by_header, lines):
        span, perms, offset, dev, inode, *path = line.split(None, 5)
        start, end = (int(x, 16) for x in span.split("-"))
        assert (r.start, r.end, r.perms, r.offset, r.dev, r.inode, r.path) == (
            start, end, perms, int(offset, 16), dev, int(inode), path[0] if path else "")
        assert (b.start, b.end, b.path, b.rss, b.vmflags) == (r.start, r.end, r.path, r.rss, r.vmflags)
