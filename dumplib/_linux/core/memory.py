"""Copying a stopped process's memory into the core: /proc/PID/mem in, pwrite out, holes kept.

Never-touched anonymous pages (per /proc/PID/pagemap) are not read at all, all-zero pages are not
written, and unreadable pages stay holes: the file is sparse, and reads back as the process saw it.
The output is a sink: a file (pwrite, holes left unwritten) or a stream (a compressor or a pipe,
holes written as zeros), which works because the core is produced strictly in file order.

Every read here that takes the target's mmap lock (its memory, pagemap, map_files) is made through
_bounded.blocking: in a worker of call_within(..., each=True) a read that waits on a lock held for
good is given up on (backend.py). None is a process_vm_readv: it waits for that lock unkillably.
"""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import ctypes
import errno
import fcntl
import os
import stat
import struct

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    import mmap

    from .staged import StagedMemory
    from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from ..._bounded import blocking, guarded, output_call
from ..._hashing import frontiers
from ..._platform import Tick
from ..._record import record
from ...errors import DumpFailed
from ..proc.errors import target_error
from ..proc.maps import Region
from .selection import Segment

if TYPE_CHECKING:
    from .far import FarReader

PAGE = 4096
#: Bytes per read of the target's memory and per write: 1 MiB stays in the CPU's cache between the read
#: that fills the buffer and the write that empties it (with 4 MiB the 2 GiB stop took 15-30% longer,
#: docs/benchmarks.md).
CHUNK = 1 << 20
ZERO_PAGE = bytes(PAGE)
#: The zero-page check looks at the first _HEAD bytes of every page first, _HEAD_GROUP pages per unpack.
_HEAD, _HEAD_GROUP = 64, 64
_ZERO_HEAD = bytes(_HEAD)
# pagemap entry flags live in the top byte: bit 63 present, bit 62 swapped.
_IN_MEMORY = bytes(1 if b & 0xC0 else 0 for b in range(256))
#: Untouched gaps shorter than this between runs of data are carried inside one PT_LOAD (as holes in
#: a file, zeros in a stream) rather than starting a new one. Every PT_LOAD then holds at least one
#: page of data per 64 KiB of address space it spans, so program headers cost at most 56 bytes per
#: page of data (1.4%) however fragmented the memory, and a stream carries at most 64 KiB of zeros
#: per run of data.
GAP = 64 << 10
#: pagemap entries read at once while looking for data (8 bytes each: 512 KiB, 1 GiB of address space).
PAGEMAP_BLOCK = 1 << 16
_PAGEMAP_SCAN = 0xC0606610  # _IOWR('f', 16, struct pm_scan_arg)
_PAGE_IS_PRESENT, _PAGE_IS_SWAPPED, _PAGE_IS_PFNZERO = 1 << 3, 1 << 4, 1 << 5
_SCAN_VEC = 512  # ranges returned per ioctl


class _ScanArg(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "size", "flags", "start", "end", "walk_end", "vec", "vec_len", "max_pages",
        "category_inverted", "category_mask", "category_anyof_mask", "return_mask")]


class _PageRegion(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("end", ctypes.c_uint64), ("categories", ctypes.c_uint64)]


_head_structs: Dict[int, struct.Struct] = {}


def _heads(pages: int) -> struct.Struct:
    """A struct that unpacks the first _HEAD bytes of each of *pages* consecutive pages (one per count,
    at most _HEAD_GROUP of them, each a few KiB)."""
    unpacker = _head_structs.get(pages)
    if unpacker is None:
        unpacker = _head_structs[pages] = struct.Struct(f"{_HEAD}s{PAGE - _HEAD}x" * (pages - 1) + f"{_HEAD}s")
    return unpacker


_BATCH_PIECE = 64 << 10  # pieces up to this size are read into one buffer and written together...
_BATCH_MAX = 1024  # ...this many at most
SEEK_DATA = getattr(os, "SEEK_DATA", 3)
SEEK_HOLE = getattr(os, "SEEK_HOLE", 4)


@record()
class Piece:
    """One PT_LOAD of a taken segment: [start, end) of memory, [start, start + filesz) stored.

    The rest reads as zero in the process too (never-touched memory, holes of a shared object).
    *probe* says how the writer finds the pages worth reading inside the stored part: "pagemap"
    (private memory: untouched pages read as zero), "object" (shared memory: the object's holes),
    or "all".
    """

    start: int
    end: int
    filesz: int
    flags: int
    probe: str
    region: Optional[Region] = None


def object_stat(pid: int, region: Region) -> Optional[os.stat_result]:
    """stat of the regular file *region* maps, or None when it cannot be known for sure.

    /proc/PID/map_files names the mapped file itself, even deleted or a memfd (it needs root);
    without it the path from maps is used only if its device and inode are the mapping's own.
    Devices and anything else not a regular file are never looked at further.
    """
    if not region.file_backed:
        return None
    try:  # a lookup in map_files takes the process's mmap lock
        st = blocking(os.stat, f"/proc/{pid}/map_files/{region.start:x}-{region.end:x}")
    except OSError:
        st = None
        path = region.path
        if path.startswith("/") and not path.endswith(" (deleted)"):
            try:
                st = os.stat(path)
            except (OSError, ValueError):
                return None
            if not _same_object(st, region):
                return None
    if st is None or not stat.S_ISREG(st.st_mode) or st.st_ino != region.inode:
        return None
    return st


def _same_object(st: os.stat_result, region: Region) -> bool:
    major, _, minor = region.dev.partition(":")
    try:
        dev = (int(major, 16), int(minor, 16))
    except ValueError:
        return False
    return st.st_ino == region.inode and (os.major(st.st_dev), os.minor(st.st_dev)) == dev


def file_end_address(region: Region, size: int) -> int:
    """Where the pages of a file of *size* bytes end in *region*: past it, the process gets SIGBUS."""
    pages = -(-size // PAGE) * PAGE  # the last, partial page is still the file's
    return max(region.start, min(region.end, region.start + pages - region.offset))


def open_object(pid: int, region: Region) -> Optional[int]:
    """A read-only descriptor on the shared object *region* maps (for SEEK_DATA), or None.

    Only through /proc/PID/map_files, never by the path in maps: that text is the target's to
    choose, and a path swapped for a device between a check and the open would have dumplib (root)
    open the device. Without map_files the object's holes are unknown and it is read whole.
    """
    if object_stat(pid, region) is None:
        return None
    try:
        fd = blocking(os.open, f"/proc/{pid}/map_files/{region.start:x}-{region.end:x}",
                      os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return None
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode) and st.st_ino == region.inode:
        return fd
    os.close(fd)
    return None


def object_runs(fd: int, lo: int, hi: int, known: Optional[List[int]] = None) -> Iterator[Tuple[int, int]]:
    """[lo', hi') runs of file offsets within [lo, hi) that hold data (SEEK_DATA/SEEK_HOLE).

    *known*, [start, end) of the last run of data found, kept by the caller from one call to the next:
    a range inside it is not asked about again with SEEK_HOLE, which walks the object's pages from the
    data to the hole: asked again for every 1 MiB chunk of a run of data, a 1 GiB shared memory segment
    kept its process stopped 7-8 s (0.5 s now, as much private memory), each doubling four times
    longer. It is still checked with SEEK_DATA, which answers at once where *pos* holds data: a hole
    punched meanwhile (another process sharing the object; the target itself, for a snapshot's copy
    after it runs) starting there is found, and not read through /proc/PID/mem, which would allocate
    its pages anew. A hole punched inside the range after *pos* is read, as it was when every chunk
    was asked about: at most a chunk's pages."""
    pos = lo
    while pos < hi:
        if known is not None and known[0] <= pos < known[1]:
            try:
                still = os.lseek(fd, pos, SEEK_DATA) == pos
            except OSError:
                still = False
            if still:
                yield pos - pos % PAGE, min(hi, -(-known[1] // PAGE) * PAGE)
                pos = known[1]
                continue
            known[:] = [0, 0]  # the object changed: ask again
        try:
            data = os.lseek(fd, pos, SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after pos
                return
            yield pos, hi  # the filesystem cannot tell: take it all
            return
        if data >= hi:
            return
        found = os.lseek(fd, data, SEEK_HOLE)
        if known is not None:
            known[:] = [data, found]
        hole = min(hi, found)
        yield data - data % PAGE, min(hi, -(-hole // PAGE) * PAGE)
        pos = hole


def coalesce(runs: Iterator[Tuple[int, int]], gap: int = GAP) -> Iterator[Tuple[int, int]]:
    """Merge address runs separated by less than *gap*."""
    current: Optional[List[int]] = None
    for lo, hi in runs:
        if current is not None and lo - current[1] < gap:
            current[1] = max(current[1], hi)
            continue
        if current is not None:
            yield current[0], current[1]
        current = [lo, hi]
    if current is not None:
        yield current[0], current[1]


def pieces_of(start: int, end: int, runs: Iterator[Tuple[int, int]], flags: int, probe: str,
              region: Optional[Region]) -> List[Piece]:
    """PT_LOADs covering [start, end) with the (coalesced, ordered) data *runs* stored.

    Each load starts at a run and stretches to the next one, its tail reading as zero; untouched
    memory before the first run is a load with nothing stored.
    """
    out: List[Piece] = []
    for lo, hi in runs:
        if not out and lo > start:
            out.append(Piece(start, lo, 0, flags, probe, region))
        elif out:
            out[-1].end = lo
        out.append(Piece(lo, end, hi - lo, flags, probe, region))
    if not out:
        out.append(Piece(start, end, 0, flags, probe, region))
    return out


#: File systems whose files are memory (reading a page of them waits on nothing but swap).
MEMORY_FILE_SYSTEMS = frozenset({"tmpfs", "hugetlbfs", "ramfs"})
_shmem_dev: Optional[Tuple[int, int]] = None


def _device(text: str, base: int) -> Optional[Tuple[int, int]]:
    major, _, minor = text.partition(":")
    try:
        return int(major, base), int(minor, base)
    except ValueError:
        return None


def _shmem_device() -> Optional[Tuple[int, int]]:
    """The kernel's internal shmem mount (MAP_SHARED|MAP_ANONYMOUS, SysV shm, memfd), in no mountinfo:
    its device is that of a memfd of our own (the same for every process, so found once)."""
    global _shmem_dev
    if _shmem_dev is None:
        try:
            fd = os.memfd_create("dumplib-shmem-probe", os.MFD_CLOEXEC)
        except (OSError, AttributeError):
            fd = -1
        if fd >= 0:
            st = os.fstat(fd)
            os.close(fd)
            _shmem_dev = (os.major(st.st_dev), os.minor(st.st_dev))
    return _shmem_dev


def mount_types(pid: int) -> Dict[Tuple[int, int], str]:
    """(major, minor) -> file system type of each mount process *pid* sees (its mountinfo)."""
    types: Dict[Tuple[int, int], str] = {}
    try:
        with open(f"/proc/{pid}/mountinfo", "rb") as f:
            text = f.read().decode("utf-8", "surrogateescape")
    except OSError:
        return types
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            fstype = fields[fields.index("-", 6) + 1]
        except (ValueError, IndexError):
            continue
        dev = _device(fields[2], 10) if len(fields) > 2 else None
        if dev is not None:
            types[dev] = fstype
    return types


#: File systems served by a daemon or over a network: even an open of their files may wait on a
#: server, and an open of a FUSE file may drop its pages from every process's page tables.
REMOTE_FILE_SYSTEMS = ("fuse", "nfs", "cifs", "smb", "9p", "ceph", "afs", "glusterfs", "lustre", "virtiofs",
                       "coda", "ncpfs", "orangefs", "gfs2", "ocfs2")


class Mounts:
    """Process *pid*'s mounts as its mountinfo shows them (its own mount namespace), read once.

    Made for one step of one dump (the plan, or the layout while the target is stopped) and handed
    to what that step asks (Prober, the far reads), never kept past it: mounts come and go, and a
    device number freed by an unmount is soon another mount's. Files are never looked at: a stat,
    open or lseek of a file on a stalled FUSE or NFS mount would wait as long as the mount does."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        #: (major, minor) -> file system type.
        self.types = mount_types(pid)
        #: (major, minor) of the file systems whose files are memory (reading a page of them waits
        #: on nothing but swap): tmpfs, hugetlbfs, ramfs, and the kernel's shmem.
        self.memory = {dev for dev, fstype in self.types.items() if fstype in MEMORY_FILE_SYSTEMS}
        shmem = _shmem_device()
        if shmem is not None:
            self.memory.add(shmem)

    def remote(self, dev: str) -> bool:
        """Whether device *dev* ("MM:mm" in hex, as maps prints it) is a remote or FUSE file system, or
        unknown (then it may be one)."""
        device = _device(dev, 16) or (-1, -1)
        if device in self.memory:
            return False  # tmpfs, memfd (a fileless program)...
        fstype = self.types.get(device)
        return fstype is None or fstype.startswith(REMOTE_FILE_SYSTEMS)

    def remote_regions(self, regions: Sequence[Region]) -> List[Region]:
        """The file mappings of *regions* on a remote or FUSE file system, or one unknown (remote)."""
        return [r for r in regions if r.file_backed and self.remote(r.dev)]


def on_remote_file_systems(pid: int, regions: Sequence[Region]) -> List[Region]:
    """The file mappings of *regions* on a remote or FUSE file system, or one unknown (Mounts.remote),
    with process *pid*'s mountinfo read once."""
    return Mounts(pid).remote_regions(regions)


def remote_file_system(pid: int, dev: str) -> bool:
    """Whether device *dev* ("MM:mm" in hex, as maps prints it) is, for process *pid*, a remote or
    FUSE file system, or unknown (then it may be one)."""
    return Mounts(pid).remote(dev)


class Prober:
    """Finds, for each taken segment, where its data is: what is stored, what is described only.

    One instance per step of a dump (the plan; the layout while the target is stopped), never kept
    past it; holds the target's pagemap open and its mounts as read for that step. Used by the writer
    (target stopped) and by the estimate (target running) with the same rules, so the two agree.

    A file on a file system (anything but tmpfs, hugetlbfs, ramfs and shmem) is never touched and
    none of its pages is faulted in: only the pages the process has in its page tables (pagemap's
    present or swapped bit) are stored, each run its own PT_LOAD, and the rest of the mapping has no
    PT_LOAD at all (readers say "cannot access"; NT_FILE still names the file and offset). Reading a
    page that is not resident would wait for the file system (a stalled FUSE daemon, a dead NFS
    server) in the kernel, uninterruptibly, holding the target's mmap lock.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._scan_works: Optional[bool] = None
        self._sizes: Dict[Tuple[str, int], Optional[int]] = {}
        self._pagemap: Optional[int] = _open_pagemap(pid)
        self._mounts: Optional[Mounts] = None
        #: PAGEMAP_SCAN's request and its answer's array, made at the first scan and reused by the
        #: next (a link_map walk asks about one page at a time, dozens of times).
        self._request: Optional[Tuple[Any, bytearray]] = None

    @property
    def mounts(self) -> Mounts:
        """The process's mounts, read at the first question and kept as long as this Prober: one step
        of one dump (a Prober is never kept past it)."""
        if self._mounts is None:
            self._mounts = Mounts(self.pid)
        return self._mounts

    def on_file_system(self, r: Region) -> bool:
        """Whether *r* maps a file whose pages may have to be read from a file system (see the class)."""
        if not r.file_backed or "ht" in r.vmflags:
            return False
        return _device(r.dev, 16) not in self.mounts.memory

    def resident(self, address: int) -> bool:
        """Whether the page at *address* is in the process's page tables (reading it faults nothing in)."""
        page = address - address % PAGE
        return any(True for _ in self._present(page, page + PAGE, False, vec=1))  # one page: one run at most

    def close(self) -> None:
        if self._pagemap is not None:
            os.close(self._pagemap)
            self._pagemap = None

    def __enter__(self) -> "Prober":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def limit(self, seg: Segment) -> int:
        """End of the part of *seg* that exists: a file mapping stops at the file's last page."""
        r = seg.region
        if r is None or not r.file_backed or self.on_file_system(r):
            return seg.end  # a file on a file system is not stat'ed: only its resident pages are taken
        key = (r.dev, r.inode)  # one stat per file, however many times it is mapped
        if key not in self._sizes:
            st = object_stat(self.pid, r)
            self._sizes[key] = None if st is None else st.st_size
        size = self._sizes[key]
        if size is None:
            return seg.end
        return max(seg.start, min(seg.end, file_end_address(r, size)))

    def pieces(self, seg: Segment, counted: bool = True) -> List[Piece]:
        """The PT_LOADs of a taken segment; none for memory past the end of a mapped file. *counted*:
        the region's page counts (smaps) are this process's now; if not (a snapshot's guess, read
        before the stop), private memory's pages are found from pagemap whatever they said."""
        end = self.limit(seg)
        if end <= seg.start:
            return []
        r = seg.region
        if r is not None and self.on_file_system(r):
            runs = coalesce(self._present(seg.start, end, False), 1)  # only touching runs merge
            return [Piece(lo, hi, hi - lo, seg.flags, "all", r) for lo, hi in runs]
        if seg.anon and r is not None:
            if not counted:
                return pieces_of(seg.start, end, coalesce(self.present_runs(seg.start, end)), seg.flags, "pagemap", r)
            if r.present == 0:
                return [Piece(seg.start, end, 0, seg.flags, "pagemap", r)]
            if r.present < r.size:
                runs = coalesce(self.present_runs(seg.start, end))
                return pieces_of(seg.start, end, runs, seg.flags, "pagemap", r)
            # Every page is there (smaps, read with the target stopped): no pagemap to consult per chunk.
            return [Piece(seg.start, end, end - seg.start, seg.flags, "all", r)]
        if r is not None and r.shared:
            fd = open_object(self.pid, r)
            if fd is not None:
                try:
                    runs = coalesce(self._object_address_runs(fd, r, seg.start, end))
                    return pieces_of(seg.start, end, runs, seg.flags, "object", r)
                finally:
                    os.close(fd)
        return [Piece(seg.start, end, end - seg.start, seg.flags, "all", r)]

    def data_bytes(self, seg: Segment) -> int:
        """What the writer will store for *seg* at most, for the estimate (target running).

        Private memory counts its present pages (smaps; rounded up, never down to nothing); shared
        objects their data (SEEK_DATA); file mappings stop at the file's end.
        """
        end = self.limit(seg)
        size = max(0, end - seg.start)
        r = seg.region
        if r is None or not size:
            return size
        if self.on_file_system(r):
            return sum(hi - lo for lo, hi in self._present(seg.start, end, False))
        if seg.anon:
            return min(size, -(-r.present // PAGE) * PAGE)
        if r.shared:
            fd = open_object(self.pid, r)
            if fd is not None:
                try:
                    return sum(hi - lo for lo, hi in self._object_address_runs(fd, r, seg.start, end))
                finally:
                    os.close(fd)
        return size

    def _object_address_runs(self, fd: int, r: Region, lo: int, hi: int) -> Iterator[Tuple[int, int]]:
        shift = r.start - r.offset  # address = file offset + shift
        for a, b in object_runs(fd, lo - shift, hi - shift):
            yield a + shift, b + shift

    def present_runs(self, lo: int, hi: int) -> Iterator[Tuple[int, int]]:
        """Address runs of pages present or swapped in [lo, hi) (the shared zero page is not data).

        PAGEMAP_SCAN (Linux 6.7+) walks only the page tables that exist, so a 64 GiB reservation
        holding 3 MiB costs microseconds; older kernels read pagemap a bounded block at a time.
        """
        return self._present(lo, hi, True)

    def _present(self, lo: int, hi: int, unknown: bool, vec: int = _SCAN_VEC) -> Iterator[Tuple[int, int]]:
        """present_runs; *unknown*: whether what pagemap cannot tell counts as present (memory: it is
        read; a file on a file system: it is not, as reading it might wait on the file system); *vec*:
        runs asked of the kernel at once (at most _SCAN_VEC)."""
        if self._pagemap is None:
            if unknown:
                yield lo, hi
            return
        if self._scan_works is not False:
            try:
                yield from self._scan(lo, hi, vec)
                self._scan_works = True
                return
            except OSError as exc:
                if self._scan_works or exc.errno not in (errno.EINVAL, errno.ENOTTY, errno.EOPNOTSUPP):
                    raise
                self._scan_works = False
        yield from self._pagemap_runs(lo, hi, unknown)

    def _scan(self, lo: int, hi: int, vec: int) -> Iterator[Tuple[int, int]]:
        """PAGEMAP_SCAN's runs in [lo, hi), *vec* per ioctl. The request is this Prober's, filled anew
        before each ioctl and its runs copied out before any is yielded: a caller may scan again (or
        drop this one) before it has taken them all."""
        if self._request is None:
            regions = (_PageRegion * _SCAN_VEC)()
            request = _ScanArg(size=ctypes.sizeof(_ScanArg), vec=ctypes.addressof(regions),
                               category_inverted=_PAGE_IS_PFNZERO, category_mask=_PAGE_IS_PFNZERO,
                               category_anyof_mask=_PAGE_IS_PRESENT | _PAGE_IS_SWAPPED,
                               return_mask=_PAGE_IS_PRESENT | _PAGE_IS_SWAPPED)
            self._request = (regions, bytearray(request))
        regions, buf = self._request
        arg = _ScanArg.from_buffer(buf)
        start = lo
        while True:
            arg.start, arg.end, arg.vec_len = start, hi, vec
            assert self._pagemap is not None
            n = blocking(fcntl.ioctl, self._pagemap, _PAGEMAP_SCAN, buf, True)
            walk_end = arg.walk_end
            yield from [(regions[i].start, regions[i].end) for i in range(n)]
            if walk_end >= hi or n < vec:
                return
            start = walk_end

    def _pagemap_runs(self, lo: int, hi: int, unknown: bool = True) -> Iterator[Tuple[int, int]]:
        for block in range(lo, hi, PAGEMAP_BLOCK * PAGE):
            n = min(PAGEMAP_BLOCK * PAGE, hi - block)
            try:
                assert self._pagemap is not None
                entries = blocking(os.pread, self._pagemap, (n // PAGE) * 8, (block // PAGE) * 8)
            except OSError:
                entries = b""
            if len(entries) != (n // PAGE) * 8:
                if unknown:
                    yield block, block + n
                continue
            flags = entries[7::8].translate(_IN_MEMORY)
            for start, end in _runs(flags):
                yield block + start * PAGE, block + end * PAGE


class FileSink:
    """A regular file written with pwrite: what is never written stays a hole.

    Its writes are _bounded.guarded: a copy given up on (its read stuck on the target's mmap lock)
    writes nothing more once its caller has gone on and closed the file.

    prepare(), called before the target is stopped where core/mapped.py says it pays (the descriptor
    then open for reading too), sizes the file for the dump expected, reserves its blocks and maps it
    with its page-cache pages already there; the copy then has the kernel read the target's memory
    straight into the mapping (window(): preadv of /proc/PID/mem), one copy into the page cache with
    nothing to allocate, where a pwrite costs a second copy plus a page-cache page and the file system's
    bookkeeping per page, all while the target is stopped (docs/benchmarks.md, "the output mapped").

    Python never reads or writes the mapping's memory itself: a page the file system cannot provide
    (the file truncated by another process, an I/O error) is a SIGBUS to a process that touches it, but
    an EFAULT to a system call. So the zero pages are found once the target runs, by reading the file
    back with preadv into a buffer of our own, and punched out with the pages no read stored (finish()),
    making the file what the pwrite path would have made."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._map: Optional[mmap.mmap] = None
        self._mapped = 0  # bytes from the start of the file the mapping covers
        self._key: Optional[Tuple[int, int]] = None  # (st_dev, st_ino) while a frontier is published
        #: [start, end, checked] file ranges holding data inside the mapping; checked: written from a
        #: buffer of ours whose zero pages were left out, rather than read in place (zero pages to find).
        self._stored: List[List[Any]] = []
        self._finished = False
        #: stage(): the copy goes into memory of ours (core/staged.py), written out by finish().
        self._stage: Optional[StagedMemory] = None

    def prepare(self, size: int) -> None:
        """Map the first *size* bytes (rounded up to pages) of the still empty file, its blocks reserved
        and its pages populated; where any step is refused, leave the file to the pwrite path. Only
        where core/mapped.refusal() found nothing against it, on a descriptor open for reading and
        writing. Never raises for a refusal."""
        from . import mapped  # only a core of MAP_AT_LEAST or more gets here

        size = -(-size // PAGE) * PAGE
        if mapped.libc.fs_type(self.fd) not in mapped.MAPPABLE_FS:  # the directory's, checked before: the same
            return
        self._hold_hasher_back()  # before the file has a size: a hasher must not take it for data
        if mapped.libc.fallocate(self.fd, 0, 0, size) != 0:
            self._unprepare()  # no room for the estimate, or no fallocate: the write path, which may fit
            return
        import mmap  # here: only a core of MAP_AT_LEAST or more is mapped, and its import is start-up

        try:
            self._map = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except (OSError, ValueError):
            self._unprepare()
            return
        # Its pages allocated and mapped now, not while the target is stopped; without this (Linux
        # before 5.14) the copy would fault them in one by one, slower than writing. By the kernel (an
        # error, not a SIGBUS, where a page cannot be had), a step at a time, the GIL let go.
        if mapped.populate_within(mapped.address_of(self._map), size) != 0:
            self._unprepare()
            return
        self._mapped = size

    def stage(self, size: int) -> None:
        """Stage the first *size* bytes (rounded up to pages) of the dump in anonymous memory of ours,
        its pages populated before the target is stopped; the copy reads the target's memory into them
        (window()) and finish(), once the target runs, writes them to the file. Where the output cannot
        be mapped (a file system off mapped.MAPPABLE_FS, or ext4/xfs above the writeback rule) this
        still takes the page cache's allocation and the file system's bookkeeping out of the stop, as
        mapping does: the stop reads into pages that are already there, the writes come after. Only
        where core/mapped.stage_refusal() found nothing against it. Never raises for a refusal: the
        file stays the pwrite path's.

        Anonymous memory cannot SIGBUS once populated, so finish() reads it directly. The file stays
        empty during the stop (a write past the staged part, where the estimate was low, goes to the
        file at once): a frontier of 0 keeps a sidecar's hasher from taking the gap for data, and
        finish() moves it as it writes."""
        from .staged import StagedMemory  # a core of MAP_AT_LEAST or more only: start-up otherwise

        try:
            self._stage = StagedMemory(size)
        except (OSError, ValueError):
            return
        self._hold_hasher_back()

    def _hold_hasher_back(self) -> None:
        """Publish a frontier of 0 for this file (_hashing.frontiers): a sidecar's hasher following it
        reads nothing until the writer moves it, whatever the file's size says."""
        st = os.fstat(self.fd)
        self._key = (st.st_dev, st.st_ino)
        frontiers[self._key] = 0

    def _unprepare(self) -> None:
        """Back to the empty file of the pwrite path: its reserved blocks freed, nothing mapped."""
        self.release()
        os.ftruncate(self.fd, 0)

    def window(self, offset: int, length: int) -> Optional[memoryview]:
        """The mapping of file bytes [offset, offset+length), for the kernel to read into (never for
        Python to touch), or None (write them): everything before *offset* is final from here (the copy
        goes in file order)."""
        if self._stage is not None:
            return self._stage.view(offset, length) if offset + length <= self._stage.size else None
        if self._map is None or offset + length > self._mapped:
            return None
        frontiers[self._key] = offset  # type: ignore[index]
        return memoryview(self._map)[offset : offset + length]

    def stored(self, offset: int, length: int, checked: bool = False) -> None:
        """File bytes [offset, offset+length) of the mapping hold data: finish() keeps them (those read
        in place, not *checked*, but for their zero pages)."""
        last = self._stored[-1] if self._stored else None
        if last is not None and last[1] == offset and last[2] == checked:
            last[1] = offset + length
        else:
            self._stored.append([offset, offset + length, checked])

    def write_at(self, data: Any, offset: int) -> None:
        guarded(self._write_at, data, offset)

    def _write_at(self, data: Any, offset: int) -> None:
        view = memoryview(data)
        if self._stage is not None and offset < self._stage.size:
            # Into the staged memory, in file order with the rest: finish() writes it out.
            n = min(len(view), self._stage.size - offset)
            self._stage.put(offset, view[:n])
            self.stored(offset, n, True)
            view, offset = view[n:], offset + n
        elif self._map is not None:
            frontiers[self._key] = offset  # type: ignore[index]
            if offset < self._mapped:
                self.stored(offset, min(len(view), self._mapped - offset), True)
        self._pwrite_all(view, offset)

    def finish(self, size: int, tick: Optional[Tick] = None) -> None:
        """The file made final at *size* bytes; a staged copy written out first, *tick* called with the
        bytes written as it goes."""
        guarded(self._finish, size, tick)

    def _finish(self, size: int, tick: Optional[Tick] = None) -> None:
        if self._stage is not None:
            self._write_staged(self._stage, size, tick)
        elif self._map is not None:
            frontiers[self._key] = size  # type: ignore[index]
            # Inside the mapping, what no read or write stored, and the zero pages of what was read in
            # place, read as zero: punched, as holes. The target runs again by now.
            end = min(size, self._mapped)
            at = 0
            for lo, hi in self._kept(end):
                self._punch(at, lo)
                at = hi
            self._punch(at, end)
        output_call(os.ftruncate, self.fd, size)
        self._finished = True

    def _write_staged(self, stage: StagedMemory, size: int, tick: Optional[Tick] = None) -> None:
        """Write what was staged to the file, in file order, its zero pages left out (holes), the memory
        given back as it goes (StagedMemory.chunks), so that the dump's memory falls as the file fills.
        The frontier follows, so a sidecar's hasher follows the file as on the pwrite path."""
        assert stage.map is not None and self._key is not None
        whole = stage.view(0, stage.size)
        try:
            for lo, hi, _ in sorted(self._stored):
                for at, n in stage.chunks(lo, min(hi, size)):
                    run = at
                    for zlo, zhi in MemoryCopier.zero_pages(stage.map, at, n):
                        if zlo > run:
                            self._pwrite_all(whole[run:zlo], run)
                        run = zhi
                    if at + n > run:
                        self._pwrite_all(whole[run : at + n], run)
                    frontiers[self._key] = at + n
                    if tick is not None:
                        tick(at + n)
        finally:
            whole.release()
        stage.written_out()
        frontiers[self._key] = size

    def _pwrite_all(self, view: memoryview, offset: int) -> None:
        while view:
            n = output_call(os.pwrite, self.fd, view, offset)  # bounded: a file system may stop answering
            view = view[n:]
            offset += n

    def _kept(self, end: int) -> Iterator[Tuple[int, int]]:
        """The [start, end) ranges below *end* that hold data: those stored, less the zero pages of
        those read in place, found by reading the file back (preadv: the kernel's access, which fails
        where a page cannot be read, where a touch of the mapping would be a SIGBUS)."""
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        try:
            for lo, hi, checked in self._stored:
                hi = min(hi, end)
                if lo >= hi:
                    continue
                if checked:
                    yield lo, hi
                    continue
                for at in range(lo, hi, CHUNK):
                    n = min(CHUNK, hi - at)
                    if output_call(os.preadv, self.fd, [view[:n]], at) != n:
                        raise OSError(errno.EIO, "the output file was cut short while it was written")
                    run = at
                    for zlo, zhi in MemoryCopier.zero_pages(buf, 0, n):
                        if zlo > run - at:
                            yield run, at + zlo
                        run = at + zhi
                    if at + n > run:
                        yield run, at + n
        finally:
            view.release()

    def _punch(self, lo: int, hi: int) -> None:
        from . import mapped  # a mapped output's only (_finish)

        if hi > lo:  # refused: the bytes are zeros either way
            output_call(mapped.libc.fallocate, self.fd, mapped.FALLOC_PUNCH_HOLE | mapped.FALLOC_KEEP_SIZE, lo,
                        hi - lo)

    def release(self) -> None:
        """Unmap and stop publishing the frontier. A worker given up on may still hold a window, its read
        stuck in the kernel (mmap will not close under an exported view): the dump has failed, and the
        file is truncated to nothing now, so its reservation is not kept for as long as that read waits
        (maybe for good); the read, when it returns, fails in the kernel (EFAULT), no signal."""
        if self._stage is not None:
            self._stage.close()  # all of it given back now if a stuck read still holds a view
            self._stage = None
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                if not self._finished:
                    os.ftruncate(self.fd, 0)
            self._map = None
            self._mapped = 0
        if self._key is not None:
            frontiers.pop(self._key, None)
            self._key = None


class StreamSink:
    """A sequential writer (``write(bytes)``): gaps before each write and at the end become zeros.
    Its writes are _bounded.guarded, as FileSink's.

    stage(), called before the target is stopped for a local compressed file or stdout (never an
    upload, whose memory is bounded), stages the copy in memory of ours (core/staged.py) while the
    target is stopped: the copy reads into it (window()) and writes go into it, and finish(), once the
    target runs, sends it down the stream, so the compressor, the disk or the pipe's reader work while
    the target runs. A write past the staged part (an estimate too low) first sends what was staged,
    the rest then going straight down the stream. *write* must be done with its argument when it
    returns (the staged memory is given back right after)."""

    _ZEROS = memoryview(bytes(1 << 20))

    def __init__(self, write: Callable[[Any], Any]) -> None:
        self._write = write
        self.pos = 0
        self._stage: Optional[StagedMemory] = None
        self._held = 0  # the end of what the staged memory holds

    def stage(self, size: int) -> None:
        """Stage the first *size* bytes (rounded up to pages); where the memory cannot be had, the
        stream is written during the stop as before. Never raises for a refusal."""
        from .staged import StagedMemory  # a core of MAP_AT_LEAST or more only: start-up otherwise

        try:
            self._stage = StagedMemory(size)
        except (OSError, ValueError):
            self._stage = None

    def window(self, offset: int, length: int) -> Optional[memoryview]:
        """The staged memory of stream bytes [offset, offset+length), for the kernel to read into, or
        None (write them)."""
        if self._stage is None or offset + length > self._stage.size:
            return None
        return self._stage.view(offset, length)

    def stored(self, offset: int, length: int, checked: bool = False) -> None:
        """Stream bytes [offset, offset+length) of the staged memory hold data (read in place)."""
        self._held = max(self._held, offset + length)

    def write_at(self, data: Any, offset: int) -> None:
        stage = self._stage
        if stage is not None and offset + len(data) > stage.size:
            self._send_staged()  # past the staged part: what was staged goes first, then the stream as before
        guarded(self._write_at, data, offset)

    def _write_at(self, data: Any, offset: int) -> None:
        if offset < max(self.pos, self._held):
            raise AssertionError(f"stream sink asked to go back from {max(self.pos, self._held)} to {offset}")
        stage = self._stage
        if stage is not None:  # it fits (write_at sent the staged part otherwise)
            stage.put(offset, data)
            self._held = offset + len(data)
            return
        self._pad(offset)
        self._write(data)
        self.pos += len(data)

    def finish(self, size: int, tick: Optional[Tick] = None) -> None:
        """Send what was staged (*tick* called with the bytes sent as it goes), then pad to *size*."""
        if self._stage is not None:
            self._send_staged(tick)
        guarded(self._pad, size)

    def _send_staged(self, tick: Optional[Tick] = None) -> None:
        """The staged bytes down the stream, in order (the zeros between data included: a stream has no
        holes), the memory given back as they go; then no more staging. Each chunk is a write of its
        own (guarded): a copy given up on during the stop stops sending at the next one, never writing
        into an output its caller has closed."""
        stage = self._stage
        assert stage is not None
        for at, n in stage.chunks(self.pos, self._held):
            guarded(self._send, stage, at, n)
            if tick is not None:
                tick(at + n)
        stage.written_out()
        self.release()

    def _send(self, stage: StagedMemory, at: int, n: int) -> None:
        place = stage.view(at, n)
        try:
            self._write(place)
        finally:
            place.release()
        self.pos = at + n

    def release(self) -> None:
        """The staged memory unmapped (all of it given back if a stuck read still holds a view)."""
        if self._stage is not None:
            self._stage.close()
            self._stage = None

    def _pad(self, upto: int) -> None:
        while self.pos < upto:
            n = min(upto - self.pos, len(self._ZEROS))
            self._write(self._ZEROS[:n])
            self.pos += n


#: errno values of a read of the target's memory that mean an unreadable range (a hole), not a failure.
UNREADABLE = (errno.EFAULT, errno.EIO, errno.ENOMEM)


class MemoryCopier:
    def __init__(self, pid: int, sink: Any, tick: Optional[Tick] = None, *, total: int = CHUNK) -> None:
        """*total*: the bytes all the pieces to copy hold; no read is larger, so neither is the buffer
        (zero-filling a whole CHUNK buffer cost a small dump more than its reads).

        Memory is read through /proc/PID/mem, never process_vm_readv, for two reasons. process_vm_readv
        pins the pages it reads, and pinning an anonymous page shared copy-on-write (a prefork server's
        worker and its master, or a snapshot and its target) makes the kernel copy it first, so dumping
        a worker would duplicate all it shares, and reading a snapshot would copy all of it;
        /proc/PID/mem does not pin (it is also what gdb reads). And process_vm_readv waits for the
        target's mmap lock unkillably: held for good (a read of the target's memory stuck on a hung FUSE
        mount, a writer queued behind it), it would keep dumplib from ever exiting, where a read of
        /proc/PID/mem is given up on and dies with the process (_bounded.py). The pinned read was
        faster per byte (0.08 against 0.11 s for 512 MiB here) and no faster for a dump: the stop is
        spent writing (docs/benchmarks.md)."""
        self.pid, self.sink, self.tick = pid, sink, tick
        self._mem: Optional[int] = None
        try:
            self._mem = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise DumpFailed.target_exited(pid) from None
        except OSError as exc:
            raise target_error(exc, pid, "reading memory of", mid_dump=True) from None
        self.buf = bytearray(min(CHUNK, max(PAGE, -(-total // PAGE) * PAGE)))
        self.view = memoryview(self.buf)
        self.written = 0  # bytes actually stored (zero pages and holes excluded)
        self._pagemap: Optional[int] = _open_pagemap(pid)
        #: Reads of pages a FUSE, NFS or CIFS mount may have to serve go through a child (core/far.py):
        #: the reader, and for each device whether it is such a mount.
        self._far: Optional["FarReader"] = None
        self._far_now = False
        self._far_devices: Dict[str, bool] = {}

    def close(self) -> None:
        if self._far is not None:
            self._far.close()
            self._far = None
        if self._pagemap is not None:
            os.close(self._pagemap)
            self._pagemap = None
        if self._mem is not None:
            os.close(self._mem)
            self._mem = None
        self.view.release()

    def copy_pieces(self, pieces: Sequence[Piece], offsets: Sequence[int]) -> None:
        """Copy every piece to its offset. Small pieces read whole that follow each other in the
        file (one-page mappings by the ten thousand) are read into one buffer and written together."""
        batch: List[Tuple[Piece, int]] = []
        size = 0
        for piece, offset in zip(pieces, offsets):
            if not piece.filesz:
                continue
            small = piece.probe == "all" and piece.filesz <= _BATCH_PIECE
            if batch and (not small or size + piece.filesz > CHUNK or len(batch) == _BATCH_MAX
                          or batch[-1][1] + batch[-1][0].filesz != offset):
                self._copy_batch(batch, size)
                batch, size = [], 0
            if small:
                batch.append((piece, offset))
                size += piece.filesz
            else:
                self.copy_piece(piece, offset)
        if batch:
            self._copy_batch(batch, size)

    def _copy_batch(self, batch: List[Tuple[Piece, int]], size: int) -> None:
        if len(batch) == 1:
            self.copy_piece(*batch[0])
            return
        at = 0
        for piece, _ in batch:
            self._far_now = self._far_mapping(piece.region)
            if self._read(piece.start, at, piece.filesz) != piece.filesz:
                break
            at += piece.filesz
        if at != size:  # something in the batch is unreadable: piece by piece, page by page
            for piece, offset in batch:
                self.copy_piece(piece, offset)
            return
        self._write_nonzero(0, size, batch[0][1])
        if self.tick is not None:
            self.tick(self.written)

    def copy_piece(self, piece: Piece, file_offset: int) -> None:
        """Copy the stored part of *piece* to *file_offset*, reading only pages that hold data."""
        end = piece.start + piece.filesz
        self._far_now = self._far_mapping(piece.region)
        if piece.probe == "pagemap":
            self.copy(piece.start, end, file_offset, self._touched_runs)
            return
        fd = open_object(self.pid, piece.region) if piece.probe == "object" and piece.region else None
        if fd is None:
            self.copy(piece.start, end, file_offset, None)
            return
        try:
            shift = piece.region.start - piece.region.offset  # type: ignore[union-attr]

            known = [0, 0]  # the run of data last found (object_runs)

            def object_data(address: int, n: int) -> Iterator[Tuple[int, int, bool]]:
                for lo, hi in object_runs(fd, address - shift, address + n - shift, known):
                    yield lo + shift - address, hi - lo, False

            self.copy(piece.start, end, file_offset, object_data)
        finally:
            os.close(fd)

    def copy(self, start: int, end: int, file_offset: int,
             runs: Optional[Callable[[int, int], Iterator[Tuple[int, int, bool]]]]) -> None:
        """Copy target memory [start, end) to the file at *file_offset*.

        *runs(address, n)* gives the (offset, length, _) parts of each chunk worth reading; the rest
        reads as zero in the process and is left a hole. None reads everything.
        """
        window = getattr(self.sink, "window", None)
        for chunk in range(start, end, CHUNK):
            n = min(CHUNK, end - chunk)
            base = file_offset + (chunk - start)
            # A mapped output (FileSink.prepare): the kernel reads into the file's own pages, nothing is
            # written. Not for reads the far reader's child makes: their bytes are copied over by Python.
            place = guarded(window, base, n) if window is not None and not self._far_now else None
            if place is None:
                for off, length, _ in runs(chunk, n) if runs else ((0, n, False),):
                    got = self._read(chunk + off, off, length)
                    if got < length:
                        self._salvage(chunk + off + got, off + got, length - got)
                    self._write_nonzero(off, length, base)
            else:
                try:
                    for off, length, _ in runs(chunk, n) if runs else ((0, n, False),):
                        self._read_in_place(place, chunk + off, off, length, base)
                finally:
                    place.release()
            if self.tick is not None:
                self.tick(self.written)

    def _touched_runs(self, address: int, n: int) -> Iterator[Tuple[int, int, bool]]:
        """(offset, length, False) runs of pages present or swapped; untouched anonymous pages read as
        zero."""
        if self._pagemap is None:
            yield 0, n, False
            return
        pages = n // PAGE
        try:
            entries = blocking(os.pread, self._pagemap, pages * 8, (address // PAGE) * 8)
        except OSError:
            yield 0, n, False
            return
        if len(entries) != pages * 8:
            yield 0, n, False
            return
        flags = entries[7::8].translate(_IN_MEMORY)
        for start, end in _runs(flags):
            yield start * PAGE, (end - start) * PAGE, False

    def _far_mapping(self, region: Optional[Region]) -> bool:
        """Whether *region* maps a file from a FUSE, NFS or CIFS mount (or one unknown): its pages, found
        resident while the target was stopped, may have been reclaimed since, and a read would then be
        served by that file system, in a wait dumplib could not exit from (core/far.py)."""
        if region is None or not region.file_backed or "ht" in region.vmflags:
            return False
        far = self._far_devices.get(region.dev)
        if far is None:
            far = self._far_devices[region.dev] = remote_file_system(self.pid, region.dev)
        return far

    def _read(self, address: int, offset: int, length: int) -> int:
        try:
            assert self._mem is not None, "read after close"
            if self._far_now:
                if self._far is None:
                    from .far import FarReader  # only dumps of processes mapping files from such mounts

                    self._far = FarReader(self._mem)
                got = blocking(self._far.pread_into, self.view[offset : offset + length], address)
            else:
                got = blocking(os.preadv, self._mem, [self.view[offset : offset + length]], address)
        except OSError as exc:
            return self._unread(exc)
        if got == 0 and length:
            # /proc/PID/mem reads nothing at all only once the address space is gone (an unreadable range
            # is EIO): the process has exited, and every read left would be zeros too, page by page,
            # until max_pause took it for a slow output.
            raise DumpFailed.target_exited(self.pid)
        return got

    def _unread(self, exc: OSError) -> int:
        """A failed read of the target's memory: 0 bytes where the range is unreadable (a hole in the
        core), else the dumplib error (proc/errors.py: the target gone is DumpFailed "exited")."""
        if exc.errno in UNREADABLE:
            return 0
        raise target_error(exc, self.pid, "reading memory of", mid_dump=True) from None

    def _salvage(self, address: int, offset: int, length: int) -> None:
        """After a short read, take what can be read page by page; the rest stays zero (a hole)."""
        for page in range(0, length, PAGE):
            if self._read(address + page, offset + page, PAGE) < PAGE:
                self.buf[offset + page : offset + page + PAGE] = ZERO_PAGE

    def _read_in_place(self, place: memoryview, address: int, offset: int, length: int, base: int) -> None:
        """Read target memory [address, address+length) into place[offset:offset+length], a window of the
        mapped output (FileSink.window): only the kernel touches those pages. A read that stops short or
        fails goes on page by page, and a page that fails there is read again into our own buffer: read
        there, it was the output's page the kernel could not provide (the file truncated by another
        process, an I/O error), and the dump fails; unread there too, it is the target's, a hole (as on
        the write path; finish() punches what was not stored)."""
        got = self._read_to(place[offset : offset + length], address)
        if got < length:
            got -= got % PAGE
        if got:
            self.sink.stored(base + offset, got)
            self.written += got
        for page in range(offset + got, offset + length, PAGE):
            if self._read_to(place[page : page + PAGE], address + page - offset) == PAGE:
                self.sink.stored(base + page, PAGE)
                self.written += PAGE
            elif self._read(address + page - offset, 0, PAGE) == PAGE:
                raise DumpFailed(f"the dump of process {self.pid} could not be stored in its output file: the file"
                                 " system could not provide the file's pages (another process truncated the"
                                 " file, or an I/O error or read-only remount); the partial file was removed."
                                 " Check the volume and dump again", pid=self.pid, errno=errno.EFAULT)

    def _read_to(self, view: memoryview, address: int) -> int:
        """preadv of the target's memory into *view*: the count read, 0 for any error (the caller tells
        whose it was)."""
        try:
            assert self._mem is not None, "read after close"
            return blocking(os.preadv, self._mem, [view], address)
        except OSError:
            return 0
        finally:
            view.release()

    def _write_nonzero(self, offset: int, length: int, base: int) -> None:
        """Write buf[offset:offset+length] except its all-zero pages, in as few calls as possible."""
        run_start = offset
        for zero_start, zero_end in self.zero_pages(self.buf, offset, length):
            if zero_start > run_start:
                self._pwrite(run_start, zero_start, base)
            run_start = zero_end
        if offset + length > run_start:
            self._pwrite(run_start, offset + length, base)

    @staticmethod
    def zero_pages(buf: Any, offset: int, length: int) -> Iterator[Tuple[int, int]]:
        """[start, end) ranges of whole pages of *buf* (a buffer of ours, never the mapped output: FileSink)
        that are all zero, in order, each run maximal.

        A page can only be zero if its first 64 bytes are. Those are taken for _HEAD_GROUP pages at a
        time by one struct unpack (64 bytes kept, the rest of the page skipped, all in C), and a page
        whose head holds data is ruled out by a C-level search of that tuple; only pages with a zero
        head are compared whole. 4 MiB of data costs ~50 us this way, where gathering the
        heads by strided memoryview slices cost ~380 (docs/benchmarks.md), and it runs while the
        target is stopped.
        """
        pages = length // PAGE
        run: Optional[Tuple[int, int]] = None
        done = 0
        # A bytearray compares in place; a staged mapping (FileSink.stage) has no startswith, and a page
        # whose head is zero is compared as a slice.
        starts = getattr(buf, "startswith", None)
        while done < pages:
            n = min(_HEAD_GROUP, pages - done)
            base = offset + done * PAGE
            heads = _heads(n).unpack_from(buf, base)
            done += n
            if _ZERO_HEAD not in heads:
                continue
            i = heads.index(_ZERO_HEAD)
            while True:
                at = base + i * PAGE
                if starts(ZERO_PAGE, at) if starts is not None else buf[at : at + PAGE] == ZERO_PAGE:
                    if run is not None and run[1] == at:
                        run = (run[0], at + PAGE)
                    else:
                        if run is not None:
                            yield run
                        run = (at, at + PAGE)
                try:
                    i = heads.index(_ZERO_HEAD, i + 1)
                except ValueError:
                    break
        if run is not None:
            yield run

    def _pwrite(self, lo: int, hi: int, base: int) -> None:
        self.sink.write_at(self.view[lo:hi], base + lo)
        self.written += hi - lo


class MemoryReader:
    """Small reads of a live process's memory (the link_map walk, thread areas, a syscall instruction):
    through /proc/PID/mem, each a _bounded.blocking call (see MemoryCopier for why not process_vm_readv).
    Called as ``reader(address, length)``: up to *length* bytes (fewer where the range runs into
    unmapped memory), None if none; PermissionError where the kernel refuses the process's memory."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._fd: Optional[int] = None

    def __call__(self, address: int, length: int) -> Optional[bytes]:
        if self._fd is None:
            try:
                self._fd = os.open(f"/proc/{self.pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
            except PermissionError:
                raise
            except OSError:
                return None
        try:
            data = blocking(os.pread, self._fd, length, address)
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EACCES):
                raise
            data = b""
        return data or None  # a range that runs into unmapped memory reads short, as with process_vm_readv

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "MemoryReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


# cpuid(leaf, subleaf, out[4]) for x86-64 System V: rbx is callee-saved, so it is pushed around cpuid.
_CPUID_CODE = bytes.fromhex("53" "89f8" "89f1" "4989d0" "0fa2" "418900" "41895804" "41894808" "4189500c" "5b" "c3")
_xstate_size: Optional[int] = None


def _cpuid(leaf: int, subleaf: int) -> Optional[Tuple[int, int, int, int]]:
    """CPUID through a tiny code page (written, then made read+execute: never writable and executable)."""
    if os.uname().machine not in ("x86_64", "AMD64"):
        return None
    libc_ = ctypes.CDLL(None, use_errno=True)
    libc_.mmap.restype = ctypes.c_void_p
    libc_.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc_.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc_.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    page = libc_.mmap(None, PAGE, 0x1 | 0x2, 0x02 | 0x20, -1, 0)  # PROT_READ|WRITE, MAP_PRIVATE|ANONYMOUS
    if page in (None, ctypes.c_void_p(-1).value):
        return None
    try:
        ctypes.memmove(page, _CPUID_CODE, len(_CPUID_CODE))
        if libc_.mprotect(page, PAGE, 0x1 | 0x4) != 0:  # PROT_READ|EXEC; refused under strict W^X policies
            return None
        out = (ctypes.c_uint32 * 4)()
        ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p)(page)(leaf, subleaf, ctypes.addressof(out))
        return out[0], out[1], out[2], out[3]
    finally:
        libc_.munmap(page, PAGE)


def xstate_note_size() -> int:
    """Bytes of one thread's NT_X86_XSTATE note on this CPU, erring high (read once).

    CPUID leaf 0xD sub-leaf 0 ECX is the standard-format XSAVE size of every feature the CPU can
    enable (11008 with AMX), the size the kernel hands to ptrace. 2696 is Intel's AVX-512+PKRU size,
    which AMD buffers are re-laid into for gdb. Without CPUID, /proc/cpuinfo's flags bound it.
    """
    global _xstate_size
    if _xstate_size is None:
        regs = None
        try:
            regs = _cpuid(0xD, 0)
        except (OSError, AttributeError, ValueError):
            regs = None
        if regs is not None and regs[2]:
            _xstate_size = max(regs[2], 2696)
        else:
            _xstate_size = _xstate_size_from_flags()
    return _xstate_size


def _xstate_size_from_flags() -> int:
    try:
        with open("/proc/cpuinfo", "rb") as f:
            flags = next((ln for ln in f if ln.startswith(b"flags")), b"").split()
    except OSError:
        flags = []
    if b"amx_tile" in flags:
        return 11008
    return 2696


def _runs(flags: bytes) -> Iterator[Tuple[int, int]]:
    """[start, end) of each run of 1 bytes in *flags* (pagemap entries made 0 or 1, one per page)."""
    end = 0
    while True:
        start = flags.find(1, end)
        if start < 0:
            return
        end = flags.find(0, start)
        if end < 0:
            end = len(flags)
        yield start, end


def _open_pagemap(pid: int) -> Optional[int]:
    """/proc/PID/pagemap for reading, or None where it cannot be read (then memory is read whole)."""
    try:
        return os.open(f"/proc/{pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
