"""`dumplib info` lists an ELF core's loaded objects by walking the link_map chain the core stores: a crafted
core's chain loops or runs long, and its NT_FILE note claims any size; info stays bounded in time and memory."""
from __future__ import annotations

import struct

import pytest

import elfcraft as ec
from test_info_hostile import MAX_RSS_MIB, SECONDS, info_child

pytestmark = pytest.mark.linux
NT_AUXV = 6
BASE = 0x400000  # one PT_LOAD here holds the program headers, dynamic section, r_debug and the chain


def _memory(nodes: int, loop_to: int) -> bytes:
    """Program headers (PT_PHDR, PT_DYNAMIC), DT_DEBUG -> r_debug -> *nodes* link_map entries, the last
    pointing back at entry *loop_to*."""
    mem = bytearray(0x1000 + 64 * nodes)
    struct.pack_into("<IIQQQQQQ", mem, 0x40, 6, 4, 0x40, BASE + 0x40, 0, 112, 112, 8)  # PT_PHDR: no bias
    struct.pack_into("<IIQQQQQQ", mem, 0x78, 2, 6, 0x200, BASE + 0x200, 0, 32, 32, 8)  # PT_DYNAMIC
    struct.pack_into("<qQqQ", mem, 0x200, 21, BASE + 0x300, 0, 0)  # DT_DEBUG, DT_NULL
    node = lambda i: BASE + 0x1000 + 64 * i  # noqa: E731
    struct.pack_into("<iiQ", mem, 0x300, 1, 0, node(0))  # r_version, r_map
    for i in range(nodes):
        nxt = node(i + 1) if i + 1 < nodes else node(loop_to)
        struct.pack_into("<QQQQ", mem, 0x1000 + 64 * i, 0, BASE + 0x400, BASE + 0x100, nxt)  # l_ld in the mapping
    mem[0x400:0x406] = b"/lib/x"
    return bytes(mem)


def _core(mem: bytes, file_note: bytes) -> bytes:
    auxv = struct.pack("<QQQQQQ", 3, BASE + 0x40, 5, 2, 0, 0)  # AT_PHDR, AT_PHNUM, AT_NULL
    return ec.core([ec.prstatus(1), ec.note(b"CORE", NT_AUXV, auxv), file_note], [(BASE, len(mem), len(mem))])


def _with_memory(core: bytes, mem: bytes) -> bytes:
    return core[: len(core) - len(mem)] + mem  # elfcraft fills loads with letters: put the memory there


@pytest.mark.parametrize("nodes, loop_to", [(2, 0), (5000, 4999)])
def test_a_looping_or_long_link_map_chain_is_walked_once(tmp_path, nodes, loop_to):
    mem = _memory(nodes, loop_to)
    files = ec.nt_file([(BASE, BASE + len(mem), b"/lib/x")])
    path = tmp_path / "chain.core"
    path.write_bytes(_with_memory(_core(mem, files), mem))
    run = info_child(path, "--json", timeout=120)
    assert b'"/lib/x"' in run.out, run
    # The child's CPU, not the wall clock, which load stretches (it failed at load 10: test_info_hostile's rule).
    assert run.cpu < SECONDS and run.rss_mib < MAX_RSS_MIB, (run.cpu, run.seconds, run.rss_mib)


def test_an_nt_file_note_claiming_256_mib_of_names_costs_little(tmp_path):
    mem = _memory(1, 0)
    names = 256 << 20  # a hole: names that cost no disk
    desc = struct.pack("<QQQQQ", 1, 4096, BASE, BASE + len(mem), 0) + b"/lib/x\0"
    head = struct.pack("<III", 5, len(desc) + names, ec.NT_FILE) + b"CORE\0\0\0\0"
    core = _core(mem, b"")
    # The NT_FILE note goes last in the notes, its names running on into a hole; the load's bytes after it.
    path = tmp_path / "names.core"
    with open(path, "wb") as f:
        body = core[64 + 56 * 2 : len(core) - len(mem)] + head + desc
        load_at = 64 + 56 * 2 + len(body) + names
        f.write(ec.ehdr(64, 2) + ec.PHDR.pack(ec.PT_NOTE, 0, 64 + 56 * 2, 0, 0, len(body) + names, 0, 4)
                + ec.PHDR.pack(ec.PT_LOAD, 4, load_at, BASE, 0, len(mem), len(mem), 4096) + body)
        f.seek(load_at)
        f.write(mem)
    run = info_child(path, "--json", timeout=120)
    assert run.code in (0, 12) and b'"/lib/x"' in run.out, run
    # The child's CPU, not the wall clock, which load stretches (it failed at load 10: test_info_hostile's rule).
    assert run.cpu < SECONDS and run.rss_mib < MAX_RSS_MIB, (run.cpu, run.seconds, run.rss_mib)
