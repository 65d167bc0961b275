"""The link_map pages a mini core keeps reach the field libthread_db reads to find a module's TLS.

The field's offset is taken from this machine's libc (its _thread_db_link_map_l_tls_modid descriptor,
found with readelf), not from dumplib: a node that starts near a page's end must keep the next page too.
"""
from __future__ import annotations

import shutil
import struct
import subprocess
import sys

import pytest

from dumplib.formats import linkmap
from helpers import require

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
#: The node offsets are this machine's libc's, read with readelf: a Linux fixture.
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads this Linux machine's libc with"
                                " readelf (the Windows interpreter runs the unit tests under Wine)")


def _l_tls_modid_offset() -> int:
    require(shutil.which("readelf") is not None, "readelf is not installed (binutils)")
    syms = subprocess.run(["readelf", "-W", "--dyn-syms", LIBC], capture_output=True, text=True, check=True).stdout
    line = next(l for l in syms.splitlines() if "_thread_db_link_map_l_tls_modid" in l)
    vaddr = int(line.split()[1], 16)
    phdrs = subprocess.run(["readelf", "-W", "-l", LIBC], capture_output=True, text=True, check=True).stdout
    with open(LIBC, "rb") as f:
        for row in phdrs.splitlines():
            p = row.split()
            if p and p[0] == "LOAD" and int(p[2], 16) <= vaddr < int(p[2], 16) + int(p[4], 16):
                f.seek(int(p[1], 16) + vaddr - int(p[2], 16))
                _bits, _count, offset = struct.unpack("<III", f.read(12))  # glibc's db_desc_t: size, count, offset
                return offset
    raise AssertionError("descriptor not found in a PT_LOAD")


def test_a_link_map_node_near_a_page_end_keeps_its_tls_module_id():
    offset = _l_tls_modid_offset()
    phdr, dynamic, r_debug, node = 0x400040, 0x600000, 0x700000, 0x800F00  # the node starts 256 bytes before a page end
    memory = {
        phdr: struct.pack("<IIQQQQQQ", 6, 4, 0x40, 0x400040, 0, 112, 112, 8)  # PT_PHDR: no load bias
        + struct.pack("<IIQQQQQQ", 2, 6, 0, dynamic, 0, 32, 32, 8),  # PT_DYNAMIC
        dynamic: struct.pack("<qQqQ", 21, r_debug, 0, 0),  # DT_DEBUG, DT_NULL
        r_debug: struct.pack("<iiQ", 1, 0, node),
        node: struct.pack("<QQQQQ", 0, 0, 0, 0, 0),
    }

    def read(address: int, n: int):
        for start, data in memory.items():
            if start <= address < start + len(data):
                return data[address - start : address - start + n]
        return None

    kept = {a - a % 4096 for a in linkmap.linkmap_addresses({3: phdr, 5: 2}, read)}
    last = node + offset + 7  # l_tls_modid is a size_t
    assert last // 4096 != node // 4096  # the field lies on the next page: the case that matters
    assert last - last % 4096 in kept, (hex(last), sorted(map(hex, kept)))
