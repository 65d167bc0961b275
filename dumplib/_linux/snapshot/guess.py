"""A snapshot's stop without the smaps walk (#16): VmFlags and page counts from a read made just
before the stop, checked while stopped and again against the clone once the target runs.

/proc/PID/smaps walks every page table of the process: at 2 GiB 15-27 ms at load 2-3, 17-88 ms at
load 7-16 (docs/benchmarks.md, eleventh session), all of it inside the stop. /proc/PID/maps prints
the same header lines without the walk (0.15 ms). So:

- before the stop (target running), smaps is read: the guess (`read`);
- in the stop, maps is read and must be the guess's header lines exactly, or smaps is read there as
  before (`holds`). Equal lines leave only what changes without touching maps: VmFlags set by
  madvise (MADV_DONTDUMP, MADV_DONTFORK, MADV_WIPEONFORK) or a userfaultfd registration of whole
  mappings, and page counts;
- a userfaultfd registration made in between is what could harm the target: a context with
  UFFD_FEATURE_EVENT_FORK makes the injected clone() wait in the kernel, killably only, for its
  manager to read the fork, and the manager may be a thread of the target, now stopped. Only a
  context whose descriptor is open can have registrations (closing the last one unregisters all),
  and a thread of the target can only use one from its own descriptor table: so the guess is used
  only when no table of the target holds a userfaultfd (`no_userfaultfd`), and, before the stop, no
  other process holds one either (`no_userfaultfd_elsewhere`): its holder could register the target's
  mappings in the window, when the target created the context and handed it on;
- a MADV_DONTFORK mapping holding memory makes the guess unusable (`read`): it is absent from the
  clone, which then cannot tell whether MADV_DONTDUMP was set on it in the window;
- page counts are not trusted in the stop: private anonymous memory is laid out from the clone
  (whose page tables are the target's at its instant) and the rest that needs counts asks pagemap;
- once the target runs, the clone's smaps tells which flags held at the clone's instant, since fork
  copies them: a MADV_DONTFORK mapping is absent from it, MADV_WIPEONFORK and MADV_DONTDUMP stay set
  (`stale`). Where they differ from the guess, nothing has been written yet: the snapshot is
  dropped and the dump is made again with smaps read in the stop (one more stop, only then).
"""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import ctypes
import os
import time
from typing import Dict, Iterable, List, Optional

from ..proc import maps
from ..proc.maps import Region
from ..ptrace import libc

#: Flags fork copies to the child as they are, and that decide what a core takes or how: DONTDUMP,
#: WIPEONFORK, hugetlb, VM_IO. (MADV_DONTFORK shows as a mapping missing from the clone; VM_LOCKED and
#: userfaultfd flags are cleared in the child, the latter unless the context forks with it.)
COPIED_FLAGS = frozenset({"dd", "wf", "ht", "io"})
UFFD_FLAGS = frozenset({"um", "uw", "ui"})
#: The stop may spend at least this long on no_userfaultfd, however quick the smaps read was: a small
#: process's walk takes a fraction of a ms, which one wait for a CPU would exceed.
CHECK_FLOOR_SECONDS = 0.002

_SYS_KCMP = 312  # x86-64
_KCMP_FILES = 2
_USERFAULTFD = "anon_inode:[userfaultfd]"


class Stale(Exception):
    """The clone shows the mappings were not as the guess said at the clone's instant: dump again."""

    #: How long the target was stopped for the attempt given up on (the result counts it).
    stopped_seconds = 0.0


class Guess:
    """The target's smaps read just before the stop: its Regions and their header lines as maps prints them."""

    def __init__(self, regions: List[Region], headers: str, seconds: float) -> None:
        self.regions = regions
        self.headers = headers
        #: How long the smaps read took: what the stop may spend instead, checking it (no_userfaultfd).
        self.seconds = seconds

    def check_seconds(self) -> float:
        """What the stop may spend on no_userfaultfd before it reads smaps instead."""
        return max(self.seconds, CHECK_FLOOR_SECONDS)

    def holds(self, maps_text: str) -> bool:
        """Whether the stopped target's /proc/PID/maps is the guess's mappings, line for line."""
        return maps_text == self.headers


def read(smaps_text: str, seconds: float) -> Optional[Guess]:
    """The guess from a smaps read that took *seconds*; None where it cannot serve: no VmFlags lines
    (an old kernel), or a MADV_DONTFORK mapping that holds memory (not VM_IO, as `[uprobes]` is). Such
    a mapping is read while stopped and is absent from the clone, so the clone cannot tell whether
    MADV_DONTDUMP was set on it after this read, or whether it is another mapping now at the same
    address with the same maps line and other flags: it would be stored against the process's wish."""
    regions = maps.parse_smaps(smaps_text)
    if not regions or smaps_text.count("\nVmFlags:") != len(regions):
        return None
    if any("dc" in r.vmflags and "io" not in r.vmflags for r in regions):
        return None
    headers = "\n".join(m.group(0) for m in maps.header_lines(smaps_text))
    return Guess(regions, headers + "\n", seconds)


def no_userfaultfd(mem: int, tids: Iterable[int], seconds: float = 1.0) -> bool:
    """Whether no thread of the process can use a userfaultfd: none in the descriptor table of *mem* (a
    live thread), and every thread in *tids* shares that table (kcmp). False when it cannot be told,
    or not within *seconds* (a readlink per descriptor and a kcmp per thread, 3-20 us each: past the
    time the smaps walk took, reading smaps in the stop costs less than telling)."""
    deadline = time.monotonic() + seconds
    try:
        names = os.listdir(f"/proc/{mem}/fd")
    except OSError:
        return False
    for i, name in enumerate(names):
        if not i % 64 and time.monotonic() > deadline:
            return False
        try:
            if os.readlink(f"/proc/{mem}/fd/{name}") == _USERFAULTFD:
                return False
        except FileNotFoundError:
            continue  # closed meanwhile, by a process sharing the table (the target's threads are stopped)
        except OSError:
            return False
    for i, tid in enumerate(tids):
        if not i % 64 and time.monotonic() > deadline:
            return False
        if tid != mem and _kcmp_files(mem, tid) != 0:
            return False  # a thread with a table of its own (unshare(CLONE_FILES)), or no answer
    return True


def no_userfaultfd_elsewhere(pid: int, seconds: float = 0.5) -> bool:
    """Whether no other process holds a userfaultfd, by every /proc/N/fd (a readlink per descriptor),
    within *seconds* (False past it, or where a table cannot be read). A context's registrations can
    be made by any process holding its descriptor, on the mappings of the process that created it: one
    the target created and handed on (a fork, SCM_RIGHTS) and then closed is in no table of the
    target's, and its holder could register the target's mappings between the read before the stop
    and the stop, where nothing in maps would show it; a context with UFFD_FEATURE_EVENT_FORK would
    then hold the injected clone() until that holder reads the fork, which it may never do. A context
    created after this scan by another process belongs to that process's memory, not the target's
    (a process sharing the target's memory without being one of its threads is left out: rare, and as
    exposed when smaps is read in the stop), and so is a process whose descriptors even root may not
    read (another PID namespace's init, in a container). Made before the stop, with the target running."""
    deadline = time.monotonic() + seconds
    me = os.getpid()
    try:
        pids = [n for n in os.listdir("/proc") if n.isdigit() and int(n) not in (pid, me)]
    except OSError:
        return False
    for other in pids:
        if time.monotonic() > deadline:
            return False
        try:
            names = os.listdir(f"/proc/{other}/fd")
        except (FileNotFoundError, PermissionError):
            continue  # gone meanwhile; or a table not even root may read (another namespace's init, here)
        except OSError:
            return False
        for name in names:
            try:
                if os.readlink(f"/proc/{other}/fd/{name}") == _USERFAULTFD:
                    return False
            except FileNotFoundError:
                continue
            except PermissionError:
                break  # as above: a process whose descriptors we may not see is left out
            except OSError:
                return False
    return True


def _kcmp_files(a: int, b: int) -> int:
    """0 when tasks *a* and *b* share one descriptor table; anything else when not, or on failure."""
    got = libc._syscall(ctypes.c_long(_SYS_KCMP), ctypes.c_long(a), ctypes.c_long(b), ctypes.c_long(_KCMP_FILES),
                        ctypes.c_long(0), ctypes.c_long(0))
    return int(got) if got >= 0 else -1


def clone_tells_counts(r: Region) -> bool:
    """Whether the clone's smaps counts *r*'s pages as the target's at the clone's instant: private
    anonymous memory (not DONTFORK, WIPEONFORK or hugetlb), whose page tables fork copies as they are
    (present and swapped entries; a mapping that never had data has none to copy)."""
    return not r.file_backed and not r.shared and not r.vmflags & {"dc", "wf", "ht"}


def stale(regions: List[Region], clone: List[Region]) -> Optional[str]:
    """Why the guess *regions* (the target's, as laid out in the stop) were not the target's mappings at
    the clone's instant, by the clone's smaps (*clone*); None when they were. Then the page counts of
    the regions clone_tells_counts of are set to the clone's: the layout finished from the clone uses them."""
    by_start: Dict[int, Region] = {c.start: c for c in clone}
    for r in regions:
        c = by_start.get(r.start)
        if "dc" in r.vmflags:
            continue  # read while stopped; absent from the clone, or present if the advice was undone: either way right
        if c is None or c.end != r.end:
            return f"{r.start:#x}-{r.end:#x} is not in the snapshot (MADV_DONTFORK since the read before the stop?)"
        if c.vmflags & UFFD_FLAGS:
            return f"{r.start:#x}-{r.end:#x} is registered with userfaultfd in the snapshot"
        if (r.vmflags ^ c.vmflags) & COPIED_FLAGS:
            return (f"{r.start:#x}-{r.end:#x} had VmFlags {' '.join(sorted(r.vmflags & COPIED_FLAGS)) or '-'} before"
                    f" the stop and {' '.join(sorted(c.vmflags & COPIED_FLAGS)) or '-'} at the snapshot")
        if r.file_backed and not r.shared and bool(r.anonymous) != bool(c.anonymous):
            # A private file mapping with anonymous pages is memory to some kinds, a file's image to others.
            return f"{r.start:#x}-{r.end:#x} changed between a file's image and written memory"
    for r in regions:
        if clone_tells_counts(r):
            c = by_start[r.start]
            r.rss, r.swap, r.anonymous, r.hugetlb = c.rss, c.swap, c.anonymous, c.hugetlb
    return None
