"""Whether a full core's output file is mapped for the copy (core/memory.py FileSink.prepare), and the
libc calls that do it.

Mapped, the output is sized to the estimate, its blocks reserved (fallocate), mapped shared and its
pages populated (MADV_POPULATE_WRITE) before the target is stopped; the copy then reads the target's
memory straight into those pages. It pays only where all of this holds (``refusal`` says which does not):

- the core is MAP_AT_LEAST or more: mapping and populating a small file costs more than it saves;
- the file system is ext2/3/4, xfs or tmpfs: blocks fallocate reserved are the ones a write into the
  mapping fills, so a full disk shows at the reservation, never as a fault in the copy. Not btrfs
  (copy-on-write: its writes take new blocks) nor anything else (network and FUSE file systems, whose
  faults wait on a server);
- the host (MemAvailable) and this process's cgroup have twice the estimate to spare: populating puts
  all of it in page cache at once, charged to this process's cgroup, where a fault of the populate
  could meet the cgroup's OOM killer and a write() would merely fail;
- on ext2/3/4 and xfs, the estimate is at most half of what may still be dirtied before the kernel
  starts background writeback (``writeback_room``): the populated pages are dirty, and once the
  flusher starts it cleans them (writing zeros) before the copy refills them, and each refill is then
  a fault while the target is stopped, slower than write() (docs/benchmarks.md). Half leaves room for
  what other writers dirty during the populate and the stop. tmpfs pages are never written back, so
  the rule does not apply there (swap is the memory guard's business).
"""
from __future__ import annotations

import sys

if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import ctypes
import errno
import os
import struct

from .sizes import MAP_AT_LEAST

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    import mmap
    from typing import Any, Dict, Optional, Tuple

PAGE = 4096
#: statfs(2) magic numbers of the file systems a mapped output is used on.
EXT4, XFS, TMPFS = 0xEF53, 0x58465342, 0x01021994
MAPPABLE_FS = {EXT4: "ext2/3/4", XFS: "xfs", TMPFS: "tmpfs"}
#: fallocate(2) modes; madvise(2) advice (Linux 5.14).
FALLOC_KEEP_SIZE, FALLOC_PUNCH_HOLE = 0x01, 0x02
MADV_DONTNEED, MADV_POPULATE_WRITE = 4, 23
#: Populated this much per call: between two calls a Ctrl-C or SIGTERM is taken (the main thread runs
#: Python's handlers only between calls), within ~0.1 s on a loaded host.
POPULATE_STEP = 64 << 20
#: The share of the writeback room (below) a mapped output may take.
WRITEBACK_SHARE = 0.5


class _Libc:
    """fallocate and statfs/fstatfs, typed (CPython has neither; os.posix_fallocate writes zeros where
    the file system has no fallocate, which is what a reservation must not do)."""

    def __init__(self) -> None:
        self._lib: Any = None

    def _load(self) -> Any:
        if self._lib is None:
            lib = ctypes.CDLL(None, use_errno=True)
            lib.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
            lib.fstatfs.argtypes = [ctypes.c_int, ctypes.c_void_p]
            lib.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
            lib.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            self._lib = lib
        return self._lib

    def fallocate(self, fd: int, mode: int, offset: int, length: int) -> int:
        """0, or the errno."""
        if self._load().fallocate(fd, mode, ctypes.c_long(offset), ctypes.c_long(length)) == 0:
            return 0
        return ctypes.get_errno() or 5

    def populate(self, address: int, length: int) -> int:
        """MADV_POPULATE_WRITE of [address, address+length): 0, or the errno. Through ctypes, which lets
        go of the GIL for the call, where mmap.madvise holds it: populating 1 GiB held every other
        thread of the process (a library caller's own, other dumps' workers) for 0.3-0.5 s."""
        if self._load().madvise(ctypes.c_void_p(address), length, MADV_POPULATE_WRITE) == 0:
            return 0
        return ctypes.get_errno() or 5

    def dontneed(self, address: int, length: int) -> int:
        """MADV_DONTNEED of [address, address+length) (anonymous memory given back): 0, or the errno."""
        if self._load().madvise(ctypes.c_void_p(address), length, MADV_DONTNEED) == 0:
            return 0
        return ctypes.get_errno() or 5

    def fs_type(self, where: "int | str") -> Optional[int]:
        """statfs's f_type of descriptor or path *where*; None if it cannot be read."""
        buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on x86-64; f_type comes first
        lib = self._load()
        rc = lib.fstatfs(where, buf) if isinstance(where, int) else lib.statfs(os.fsencode(where), buf)
        if rc != 0:
            return None
        return int(struct.unpack_from("=q", buf.raw)[0]) & 0xFFFFFFFF


libc = _Libc()


def refusal(directory: str, size: int) -> Optional[str]:
    """Why a core of *size* bytes written in *directory* is not mapped (module docstring), or None."""
    if size < MAP_AT_LEAST:
        return "smaller than MAP_AT_LEAST"
    fs = libc.fs_type(directory)
    if fs not in MAPPABLE_FS:
        return f"file system {fs:#x} is not one of ext2/3/4, xfs, tmpfs" if fs is not None else "statfs failed"
    return memory_refusal(size, fs, Readings.now())


def address_of(m: "mmap.mmap") -> int:
    """The address of mapping *m*, for madvise. The buffer export that tells it ends before this
    returns, so *m* may still be closed."""
    anchor = ctypes.c_char.from_buffer(m)
    try:
        return ctypes.addressof(anchor)
    finally:
        del anchor


def memory_room() -> Optional[int]:
    """What this process may still take now: the lower of the host's MemAvailable and its cgroup's
    room under memory limits (either may be unknown: None if both are)."""
    from ..proc.cgroups import cgroup_room

    room = cgroup_room(os.getpid())
    known = [v for v in (_meminfo("MemAvailable"), room[0] if room is not None else None) if v is not None]
    return min(known) if known else None


def populate_within(address: int, size: int, room: "Any" = memory_room) -> int:
    """MADV_POPULATE_WRITE of [address, address+size) a POPULATE_STEP at a time: 0, or the errno
    (ENOMEM where the room ran short). Before each step the host's and the cgroup's room (*room()*) is
    read again and must still hold what is left to populate plus *size* (the rule of twice the
    estimate, kept all along): other dumps, here or in other processes, checked the same room before
    any of them took it, and pages populated past a cgroup's limit meet its OOM killer (which may pick
    a neighbour), where stopping short is only a fallback to the write path."""
    for at in range(0, size, POPULATE_STEP):
        left = room()
        if left is not None and left < (size - at) + size:
            return errno.ENOMEM
        err = libc.populate(address + at, min(POPULATE_STEP, size - at))
        if err:
            return err
    return 0


def stage_refusal(size: int, readings: "Optional[Readings]" = None) -> Optional[str]:
    """Why a core of *size* bytes whose output is not mapped is not staged in memory either
    (core/memory.py FileSink.stage: the copy read into anonymous memory of ours while the target is
    stopped, written to the file once it runs), or None. The memory rule alone: staged pages are ours,
    never written back, and any file system takes the writes that follow."""
    if size < MAP_AT_LEAST:
        return "smaller than MAP_AT_LEAST"
    return _memory_rule(size, readings if readings is not None else Readings.now())


def _memory_rule(size: int, r: "Readings") -> Optional[str]:
    if r.available is None or r.available < 2 * size:
        return f"MemAvailable {r.available} is less than twice the estimate {size}"
    if r.cgroup_room is not None and r.cgroup_room < 2 * size:
        return f"this process's cgroup has {r.cgroup_room} left, less than twice the estimate {size}"
    return None


def memory_refusal(size: int, fs: int, r: "Readings") -> Optional[str]:
    """The memory and writeback rules (module docstring) for *size* bytes on file system *fs*."""
    why = _memory_rule(size, r)
    if why is not None:
        return why
    if fs != TMPFS:
        room = writeback_room(r)
        if room is None or size > WRITEBACK_SHARE * room:
            return (f"{room} bytes may still be dirtied before background writeback starts: not twice the"
                    f" estimate {size}")
    return None


class Readings:
    """What the decision reads of the host: /proc/meminfo's MemAvailable, /proc/vmstat's page counts
    (the kernel's own background threshold among them), the dirty sysctls, and this process's cgroup
    (its room under memory limits; on cgroup v2, its memory.stat and headroom for the cgroup's own
    dirty limits). Plain numbers, so tests can give their own (tests/unit/test_mapped_decision.py)."""

    def __init__(self, *, available: Optional[int], vmstat: Dict[str, int], background_ratio: int = 10,
                 background_bytes: int = 0, dirty_ratio: int = 20, dirty_bytes: int = 0,
                 cgroup_room: Optional[int] = None, memcg: Optional[Tuple[int, int, int]] = None) -> None:
        self.available = available
        #: nr_dirty_background_threshold, nr_dirty, nr_writeback, nr_free_pages, nr_active_file,
        #: nr_inactive_file (pages).
        self.vmstat = vmstat
        self.background_ratio, self.background_bytes = background_ratio, background_bytes
        self.dirty_ratio, self.dirty_bytes = dirty_ratio, dirty_bytes
        self.cgroup_room = cgroup_room
        #: cgroup v2 with a memory limit on this process's cgroup or an ancestor: (file pages, dirty and
        #: under writeback, headroom under the tightest memory.max/memory.high), in bytes.
        self.memcg = memcg

    @classmethod
    def now(cls) -> "Readings":
        from ..proc.cgroups import cgroup_room  # only for a dump this large

        room = cgroup_room(os.getpid())
        return cls(available=_meminfo("MemAvailable"), vmstat=_vmstat(),
                   background_ratio=_sysctl("dirty_background_ratio"),
                   background_bytes=_sysctl("dirty_background_bytes"),
                   dirty_ratio=_sysctl("dirty_ratio"), dirty_bytes=_sysctl("dirty_bytes"),
                   cgroup_room=room[0] if room is not None else None, memcg=_memcg())


def writeback_room(r: Readings) -> Optional[int]:
    """Bytes that may still be dirtied before the kernel starts background writeback: its global
    threshold (/proc/vmstat's nr_dirty_background_threshold, computed when read, from
    vm.dirty_background_bytes or _ratio of the dirtyable memory) less what is dirty or under writeback
    now; and where the cgroup has memory limits (cgroup v2), the cgroup's own threshold (the same
    share of its file pages plus its headroom, as the kernel's mdtc_calc_avail has it) less its own
    dirty pages, if lower. None if the global figures cannot be read."""
    v = r.vmstat
    try:
        threshold, dirty = v["nr_dirty_background_threshold"], v["nr_dirty"] + v["nr_writeback"]
    except KeyError:
        return None
    room = (threshold - dirty) * PAGE
    if r.memcg is not None:
        files, memcg_dirty, headroom = r.memcg
        global_avail = (v.get("nr_free_pages", 0) + v.get("nr_active_file", 0) + v.get("nr_inactive_file", 0)) * PAGE
        global_clean = global_avail - min(global_avail, dirty * PAGE)
        clean = files - min(files, memcg_dirty)
        avail = files + min(headroom, global_clean - min(global_clean, clean))
        share = _share(r.background_bytes, r.background_ratio, global_avail)
        limit = _share(r.dirty_bytes, r.dirty_ratio, global_avail)
        if share >= limit:  # as the kernel: a background share at or above the limit is half the limit
            share = limit / 2
        room = min(room, int(share * avail) - memcg_dirty)
    return max(0, room)


def _share(nbytes: int, ratio: int, global_avail: int) -> float:
    """A dirty sysctl as a share of dirtyable memory (bytes are a share of the global figure)."""
    if nbytes:
        return min(1.0, nbytes / global_avail) if global_avail else 1.0
    return ratio / 100


def _meminfo(name: str) -> Optional[int]:
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(name.encode() + b":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


_VMSTAT = (b"nr_dirty_background_threshold", b"nr_dirty", b"nr_writeback", b"nr_free_pages", b"nr_active_file",
           b"nr_inactive_file")


def _vmstat() -> Dict[str, int]:
    found: Dict[str, int] = {}
    try:
        with open("/proc/vmstat", "rb") as f:
            for line in f:
                name, _, value = line.partition(b" ")
                if name in _VMSTAT:
                    found[name.decode()] = int(value)
    except (OSError, ValueError):
        pass
    return found


def _sysctl(name: str) -> int:
    try:
        with open(f"/proc/sys/vm/{name}", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def _memcg() -> Optional[Tuple[int, int, int]]:
    """(file pages, dirty + writeback, headroom) of this process's cgroup v2, in bytes, when it or an
    ancestor has a memory limit; else None (the kernel then applies the global threshold alone)."""
    from ..proc.cgroups import _cgroup_mounts, _cgroup_value

    try:
        with open("/proc/self/cgroup", "rb") as f:
            line = next((ln for ln in f.read().decode("utf-8", "surrogateescape").splitlines()
                         if ln.startswith("0::")), None)
    except OSError:
        return None
    v2 = _cgroup_mounts()[0]
    if line is None or v2 is None:
        return None
    parts = [p for p in line[3:].split("/") if p and p not in (".", "..")]
    headroom: Optional[int] = None
    for depth in range(len(parts), 0, -1):  # the root cgroup has no limit files
        base = os.path.join(v2, *parts[:depth])
        used = _cgroup_value(base, "memory.current")
        for limit_file in ("memory.max", "memory.high"):
            limit = _cgroup_value(base, limit_file)
            if used is not None and limit is not None:
                headroom = max(0, limit - used) if headroom is None else min(headroom, max(0, limit - used))
    if headroom is None:
        return None
    stat: Dict[str, int] = {}
    try:
        with open(os.path.join(v2, *parts, "memory.stat"), "rb") as f:
            for ln in f:
                key, _, value = ln.partition(b" ")
                stat[key.decode()] = int(value)
    except (OSError, ValueError):
        return None
    return (stat.get("active_file", 0) + stat.get("inactive_file", 0),
            stat.get("file_dirty", 0) + stat.get("file_writeback", 0), headroom)
