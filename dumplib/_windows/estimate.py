"""What a dump will weigh before it is written: MiniDumpWriteDump's bytes per category, from the
target's committed regions (VirtualQueryEx only: the walk never reads the target's memory)."""
from __future__ import annotations

import sys

if sys.platform != "win32":  # survives python -O, unlike the assert below
    raise ImportError(f"{__name__} is Windows only")
assert sys.platform == "win32"  # tells type checkers on other platforms to skip this module

from typing import Dict, Iterable

from .masks import MiniDumpType
from . import kernel32

#: Streams besides memory: thread and module lists, memory map, handles, unwind data. Measured
#: under Wine at 0.8 MB for an idle python.exe mini dump; real Windows is of the same order.
METADATA_BYTES = 1 << 20
#: What a mini dump takes of each thread stack and module (referenced pages, headers), roughly.
PER_REGION_MINI = 64 << 10


def estimate_parts(regions: Iterable[kernel32.MEMORY_BASIC_INFORMATION], mask: int) -> Dict[str, int]:
    """Bytes per category MiniDumpWriteDump will write for *mask*, from the committed regions alone."""
    parts = {"stacks": 0, "heap": 0, "images": 0, "shared": 0, "metadata": METADATA_BYTES}
    for r in regions:
        if r.Protect & kernel32.PAGE_GUARD or r.Protect & 0xFF == kernel32.PAGE_NOACCESS or r.Protect == 0:
            continue
        private_rw = r.Type == kernel32.MEM_PRIVATE and r.Protect & kernel32.PAGE_WRITABLE
        category = "images" if r.Type == kernel32.MEM_IMAGE else "heap" if r.Type == kernel32.MEM_PRIVATE else "shared"
        if mask & MiniDumpType.WithFullMemory:
            parts[category] += r.RegionSize
        elif mask & MiniDumpType.WithPrivateReadWriteMemory and private_rw:
            parts["heap"] += r.RegionSize
        elif r.Type == kernel32.MEM_IMAGE and r.AllocationBase == r.BaseAddress:
            parts["images"] += PER_REGION_MINI // 16  # module headers
    return parts
