"""Anonymous memory of ours that a full core's copy is staged in while the target is stopped, then
written out once it runs (core/memory.py: FileSink.stage for a file that is not mapped, StreamSink.stage
for a local compressed file or stdout). Whether it is used: core/mapped.py stage_refusal (twice the
estimate free on the host and in this process's cgroup).

Why it shortens the stop: the kernel reads the target's memory (preadv of /proc/PID/mem) into pages
that are already there, where writing it costs a page-cache page and the file system's bookkeeping per
page, or a compressor's time, all while the target waits (docs/benchmarks.md, "staged in memory").
The memory is:

- private and anonymous: never written back, and Python may read it (it cannot SIGBUS once populated);
- MADV_DONTFORK: a fork meanwhile (a library caller's) does not share it copy-on-write, which would
  make every read into it copy a page;
- MADV_HUGEPAGE where the host allows transparent huge pages: the kernel's copy into it misses the TLB
  far less (2 GiB: 0.57-0.72 s against 0.75-0.83 s in 4 KiB pages here);
- populated (MADV_POPULATE_WRITE) before the stop, in steps with the GIL let go, so that Ctrl-C is
  taken between two;
- given back to the kernel (MADV_DONTNEED) in whole huge pages as it is written out, so that the
  dump's memory falls as the output fills, and all of it at once when a read stuck for good still
  holds a view of it (the mapping cannot be unmapped then).
"""
from __future__ import annotations

import sys

if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import contextlib
import mmap

from . import mapped

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Any, Iterator, Optional, Tuple

PAGE = 4096
#: How much is written out (and its zero pages looked for) at a time.
CHUNK = 1 << 20
#: A transparent huge page (x86-64 with 4 KiB pages): memory is given back in these, since giving back
#: part of one splits it and frees it only later.
HUGE = 2 << 20


class StagedMemory:
    """*size* bytes (rounded up to huge pages) of populated anonymous memory (module docstring). Raises
    OSError where it cannot be had (the caller then writes during the stop); nothing is left mapped."""

    def __init__(self, size: int) -> None:
        # A whole number of huge pages: the kernel aligns such an anonymous mapping to them (Linux
        # 6.7+), so all of it can be huge and give-backs split none.
        self.size = -(-size // HUGE) * HUGE
        self.map: Optional[mmap.mmap] = mmap.mmap(-1, self.size, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE)
        self._given = 0  # memory below this offset is given back
        try:
            self.map.madvise(mmap.MADV_DONTFORK)
            # Nor in a core of dumplib itself (a SIGQUIT, a crash: the kernel writes it while the target
            # may still be stopped, and to wherever core_pattern says): the bytes are the target's.
            self.map.madvise(mmap.MADV_DONTDUMP)
            with contextlib.suppress(AttributeError, OSError):  # no THP on this kernel or build
                self.map.madvise(mmap.MADV_HUGEPAGE)
            self.address = mapped.address_of(self.map)
            err = mapped.populate_within(self.address, self.size)
            if err:
                raise OSError(err, "the staged memory could not be populated (or the room for it ran short)")
        except BaseException:  # OSError, or a Ctrl-C between two steps of the populate
            self.map.close()
            self.map = None
            raise

    def view(self, offset: int, length: int) -> memoryview:
        assert self.map is not None
        return memoryview(self.map)[offset : offset + length]

    def put(self, offset: int, data: Any) -> None:
        """*data* copied in at *offset* (a write the copy makes while the target is stopped)."""
        place = self.view(offset, len(data))
        try:
            place[:] = data
        finally:
            place.release()

    def chunks(self, lo: int, hi: int) -> Iterator[Tuple[int, int]]:
        """(offset, length) pieces of [lo, hi), in order, for the caller to write out: the memory of
        each is given back (in whole huge pages) once the caller asks for the next."""
        for at in range(lo, hi, CHUNK):
            n = min(CHUNK, hi - at)
            yield at, n
            end = self.address + at + n  # huge pages are aligned by address, wherever the mapping starts
            upto = end - end % HUGE - self.address
            if upto > self._given:
                self._give_back(self._given, upto)
                self._given = upto

    def written_out(self) -> None:
        """Everything left given back: the output holds it all now."""
        if self.size > self._given:
            self._give_back(self._given, self.size)
            self._given = self.size

    def _give_back(self, lo: int, hi: int) -> None:
        lo -= lo % PAGE
        mapped.libc.dontneed(self.address + lo, min(self.size, hi) - lo)

    def close(self) -> None:
        """Unmap; if a read given up on still holds a view of it, give all of it back instead (a read
        that returns later writes into fresh zero pages, which go with the mapping)."""
        if self.map is None:
            return
        try:
            self.map.close()
        except BufferError:
            mapped.libc.dontneed(self.address, self.size)
        self.map = None
