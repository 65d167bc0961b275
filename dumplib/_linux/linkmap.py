"""The dynamic linker's bookkeeping a debugger walks to name shared libraries.

gdb finds shared libraries through r_debug -> link_map in the process's memory (found via the
executable's DT_DEBUG). Small dumps keep exactly those pages, so backtraces name every library's
functions without taking the heap.
"""
from __future__ import annotations

import struct
from typing import Callable, Dict, List, Optional, Set

AT_PHDR, AT_PHNUM = 3, 5
PT_DYNAMIC, PT_PHDR = 2, 6
DT_NULL, DT_DEBUG = 0, 21
_MAX_OBJECTS = 4096
_MAX_DYN = 512
_MAX_NAME = 4096

Reader = Callable[[int, int], Optional[bytes]]


def parse_auxv(raw: bytes) -> Dict[int, int]:
    out: Dict[int, int] = {}
    for i in range(0, len(raw) - 15, 16):
        key, value = struct.unpack_from("<QQ", raw, i)
        if key == 0:
            break
        out.setdefault(key, value)
    return out


def linkmap_addresses(auxv: Dict[int, int], read: Reader) -> List[int]:
    """Addresses (of byte ranges' first and last bytes) a debugger reads to list shared libraries.

    Best effort: a static executable, or memory that cannot be read, yields what was found so far.
    """
    wanted: List[int] = []
    phdr, phnum = auxv.get(AT_PHDR), auxv.get(AT_PHNUM)
    if not phdr or not phnum:
        return wanted
    raw = read(phdr, phnum * 56)
    if raw is None or len(raw) < phnum * 56:
        return wanted
    bias = dynamic = dyn_size = None
    for i in range(phnum):
        ptype, _flags, _off, vaddr, _pa, _filesz, memsz, _al = struct.unpack_from("<IIQQQQQQ", raw, i * 56)
        if ptype == PT_PHDR:
            bias = phdr - vaddr
        elif ptype == PT_DYNAMIC:
            dynamic, dyn_size = vaddr, memsz
    if dynamic is None or dyn_size is None:
        return wanted
    dynamic += bias or 0
    wanted += [dynamic, dynamic + dyn_size - 1]
    dyn = read(dynamic, min(dyn_size, _MAX_DYN * 16))
    r_debug = None
    for i in range(0, len(dyn or b"") - 15, 16):
        tag, value = struct.unpack_from("<qQ", dyn, i)  # type: ignore[arg-type]
        if tag == DT_NULL:
            break
        if tag == DT_DEBUG:
            r_debug = value
    if not r_debug:
        return wanted
    wanted += [r_debug, r_debug + 40 - 1]
    head = read(r_debug, 16)
    node = struct.unpack_from("<Q", head, 8)[0] if head and len(head) == 16 else 0
    seen: Set[int] = set()
    while node and node not in seen and len(seen) < _MAX_OBJECTS:
        seen.add(node)
        entry = read(node, 40)
        if entry is None or len(entry) < 40:
            break
        wanted += [node, node + 40 - 1]
        _l_addr, l_name, l_ld, l_next = struct.unpack_from("<QQQQ", entry, 0)
        if l_name:
            name = read(l_name, 256) or b""
            end = name.find(b"\0")
            wanted += [l_name, l_name + (end if end >= 0 else min(len(name), _MAX_NAME))]
        if l_ld:
            wanted.append(l_ld)
        node = l_next
    return wanted
