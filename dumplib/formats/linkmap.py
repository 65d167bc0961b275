"""The dynamic linker's bookkeeping a debugger walks to name shared libraries.

gdb finds shared libraries through r_debug -> link_map in the process's memory (found via the
executable's DT_DEBUG). Small dumps keep exactly those pages, so backtraces name every library's
functions without taking the heap.
"""
from __future__ import annotations

import struct

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Set, Tuple

AT_PHDR, AT_PHNUM, AT_BASE, AT_ENTRY = 3, 5, 7, 9
PT_DYNAMIC, PT_PHDR = 2, 6
DT_NULL, DT_DEBUG = 0, 21
_MAX_OBJECTS = 4096
_MAX_DYN = 512
_MAX_NAME = 4096
#: Bytes of each link_map node kept: libthread_db reads l_tls_modid (1152 bytes in, glibc 2.36) to find TLS.
LINK_MAP_BYTES = 1280
#: Bytes from a thread pointer kept: glibc's struct pthread (2368 bytes in 2.36) with room for other versions.
TCB_BYTES = 4096
#: A static TLS block lies below the thread pointer (x86-64's variant II); one further away is not static.
_STATIC_TLS_SPAN = 1 << 20
#: Bytes kept of a dynamic TLS block (a dlopen'ed object's, malloc'ed apart from the thread pointer).
_DYNAMIC_TLS_BYTES = 4096
_MAX_DTV = 4096
#: TLS blocks kept per thread: one per module with TLS (a few); a forged DTV shared by thousands of
#: threads must not make thousands of ranges each.
MAX_TLS_BLOCKS = 64
_MAX_PHDRS = 256
PT_LOAD = 1

if TYPE_CHECKING:
    Reader = Callable[[int, int], Optional[bytes]]
else:  # a type alias: at run time only its name (dumplib/_typing.py)
    Reader = object


def parse_auxv(raw: bytes) -> Dict[int, int]:
    out: Dict[int, int] = {}
    for i in range(0, len(raw) - 15, 16):
        key, value = struct.unpack_from("<QQ", raw, i)
        if key == 0:
            break
        out.setdefault(key, value)
    return out


def linkmap_addresses(auxv: Dict[int, int], read: Reader, objects: Optional[List[int]] = None,
                      ends: Optional[List[int]] = None) -> List[int]:
    """Addresses (of byte ranges' first and last bytes) a debugger reads to list shared libraries.

    *objects*, when given, receives an address inside each loaded object (the executable's program
    headers, the dynamic loader's base, each link_map entry's dynamic section): what mini dumps
    take the writable data of; *ends*, when given, where each object's image ends (its last PT_LOAD's
    end: past its .bss). Best effort: a static executable, or memory that cannot be read,
    yields what was found so far.
    """
    wanted: List[int] = []
    if objects is not None:
        objects += [a for a in (auxv.get(AT_PHDR), auxv.get(AT_BASE), auxv.get(AT_ENTRY)) if a]
    phdr, phnum = auxv.get(AT_PHDR), auxv.get(AT_PHNUM)
    if not phdr or not phnum:
        return wanted
    raw = read(phdr, phnum * 56)
    if raw is None or len(raw) < phnum * 56:
        return wanted
    bias = dynamic = dyn_size = None
    image_end = 0
    for i in range(phnum):
        ptype, _flags, _off, vaddr, _pa, _filesz, memsz, _al = struct.unpack_from("<IIQQQQQQ", raw, i * 56)
        if ptype == PT_PHDR:
            bias = phdr - vaddr
        elif ptype == PT_DYNAMIC:
            dynamic, dyn_size = vaddr, memsz
        elif ptype == PT_LOAD:
            image_end = max(image_end, vaddr + memsz)
    if ends is not None and image_end:
        ends.append(image_end + (bias or 0))
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
        wanted += [node, node + LINK_MAP_BYTES - 1]
        l_addr, l_name, l_ld, l_next = struct.unpack_from("<QQQQ", entry, 0)
        if ends is not None and l_addr:  # a shared object: its ELF header is at its load address
            ends += _image_end(l_addr, read)
        if l_name:
            name = read(l_name, 256) or b""
            end = name.find(b"\0")
            wanted += [l_name, l_name + (end if end >= 0 else min(len(name), _MAX_NAME))]
        if l_ld:
            wanted.append(l_ld)
            if objects is not None:
                objects.append(l_ld)
        node = l_next
    return wanted


def _image_end(base: int, read: Reader) -> List[int]:
    """[end of the last PT_LOAD] of the shared object whose ELF header is at *base*, or [] if unreadable."""
    ehdr = read(base, 64)
    if ehdr is None or len(ehdr) < 64 or ehdr[:4] != b"\x7fELF":
        return []
    phoff, = struct.unpack_from("<Q", ehdr, 32)
    phnum, = struct.unpack_from("<H", ehdr, 56)
    raw = read(base + phoff, min(phnum, _MAX_PHDRS) * 56) or b""
    loads = [struct.unpack_from("<IIQQQQQQ", raw, i) for i in range(0, len(raw) - 55, 56)]
    end = max((vaddr + memsz for ptype, _f, _o, vaddr, _p, _fs, memsz, _a in loads if ptype == PT_LOAD), default=0)
    return [base + end] if end else []


def thread_area_ranges(thread_pointer: int, read: Reader) -> List[Tuple[int, int]]:
    """[start, end) byte ranges a thread library reads for one thread's TLS (glibc, x86-64).

    The thread control block at the thread pointer (fs_base), its dynamic thread vector (DTV), and
    each TLS block the DTV points to: a static block runs from its start up to the thread pointer.
    Exact ranges, not pages: a DTV is malloc'ed, and the rest of its heap page is not mini's to take.
    Best effort: what cannot be read (another libc, a thread not yet set up) ends the walk.
    """
    if not thread_pointer:
        return []
    wanted = [(thread_pointer, thread_pointer + TCB_BYTES)]
    head = read(thread_pointer, 16)
    if head is None or len(head) < 16:
        return wanted
    dtv = struct.unpack_from("<Q", head, 8)[0]
    count = read(dtv - 16, 8) if dtv >= 16 else None  # dtv[-1].counter: the slots it has room for
    if count is None or len(count) < 8:
        return wanted
    slots = min(struct.unpack("<Q", count)[0], _MAX_DTV)
    wanted.append((dtv - 16, dtv + 16 * (slots + 1)))
    raw = read(dtv + 16, 16 * slots) or b""
    for i in range(0, len(raw) - 15, 16):
        block = struct.unpack_from("<Q", raw, i)[0]
        if block in (0, (1 << 64) - 1) or block & 1:  # no block, or TLS_DTV_UNALLOCATED
            continue
        if len(wanted) >= 2 + MAX_TLS_BLOCKS:
            break
        if block < thread_pointer and thread_pointer - block <= _STATIC_TLS_SPAN:
            wanted.append((block, thread_pointer))
        else:
            wanted.append((block, block + _DYNAMIC_TLS_BYTES))
    return wanted
