"""Snapshot dumps on Linux: what decides whether one may be taken, and what a snapshot cannot hold.

The technique (README.md, docs/benchmarks.md for its costs): with every thread stopped and its registers saved, one
thread runs clone() (snapshot/inject.py); the child is a copy-on-write image of the process that never runs;
the target is let go and the core's memory is read from the child. What the child does not hold
the same way is read from the stopped target first and kept in memory until its place in the file:

- MADV_DONTFORK memory is not in the child at all, MADV_WIPEONFORK memory is zero there;
- private hugetlb memory may be taken from the child when the target writes to it;
- MAP_SHARED memory is the same pages in both, so it keeps changing once the target runs: up to
  SHARED_BEFORE_RESUME of it is read before, the rest after, and the result says how much.
"""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..core.memory import MemoryReader, Piece, on_remote_file_systems
from ..proc.cgroups import cgroup_room
from ..proc.maps import Region
from ..proc.pidfiles import read_locked, read_status, thread_state, tids_or_none
from ..ptrace import libc
from . import inject, seccomp

#: Read before the target resumes at most this much memory the snapshot cannot hold (held in memory
#: by dumplib until written); more and no snapshot is taken.
BEFORE_RESUME_LIMIT = 256 << 20
#: Shared memory read before the target resumes (so it is of the snapshot's instant) up to this much;
#: beyond it shared memory is read afterwards, as it then is, and the result says so.
SHARED_BEFORE_RESUME = 64 << 20
#: Memory left free besides the snapshot's worst case, on the host and in the target's cgroup.
HOST_RESERVE_FRACTION = 0.05
HOST_RESERVE_MIN = 256 << 20


def taken_before_resume(pieces: Sequence[Piece]) -> Tuple[List[int], int]:
    """(indexes of the pieces to read from the stopped target, bytes of shared memory read after resume)."""
    early: List[int] = []
    shared: List[int] = []
    for i, p in enumerate(pieces):
        r = p.region
        if not p.filesz or r is None:
            continue
        # Private hugetlb by its flag, not its page count: a count may be from before the stop (guess.py).
        if "dc" in r.vmflags or "wf" in r.vmflags or (("ht" in r.vmflags or r.hugetlb) and not r.shared):
            early.append(i)
        elif r.shared and r.writable:
            shared.append(i)
    shared_bytes = sum(pieces[i].filesz for i in shared)
    if shared_bytes <= SHARED_BEFORE_RESUME:
        return sorted(early + shared), 0
    return early, shared_bytes


def obstacle(pid: int, regions: Sequence[Region], pieces: Sequence[Piece], early: Sequence[int],
             state_before: str, threads: Optional[Dict[int, Any]] = None) -> Optional[str]:
    """Why no snapshot of the stopped process *pid* may be taken, or None. *state_before*: its State
    before dumplib stopped it. *threads*: its stopped threads (ptrace/regs.py ThreadState), whose seccomp mode
    was read as they stopped; without them each thread's status is read now."""
    status = read_status(pid)
    if state_before.startswith("T"):
        return ("the process was already stopped (job control: SIGSTOP, SIGTSTP or the like) before dumplib stopped"
                " it: it is not running, so a snapshot gains nothing")
    modes = ({tid: t.seccomp for tid, t in sorted(threads.items())} if threads
             else {tid: read_status(pid, tid).get("Seccomp", "0") for tid in tids_or_none(pid)})
    for tid, mode in modes.items():
        # Filters (mode 2) are run before the injection (seccomp.py); strict mode allows no clone().
        if mode == "1":
            return f"thread {tid} runs in seccomp strict mode, which kills the process on the clone() a snapshot needs"
    uffd = [r for r in regions if r.vmflags & {"um", "uw", "ui"}]
    if uffd:
        # A userfaultfd context with UFFD_FEATURE_EVENT_FORK makes any fork wait in the kernel until its
        # manager (maybe a thread of this very process, now stopped) has read the event: the clone
        # would never return while the target is held. Whoever holds the context cannot be known.
        return (f"{len(uffd)} of its mappings are registered with userfaultfd (first at {uffd[0].start:#x}), whose"
                " manager may have to answer a fork before it can finish")
    early_bytes = sum(pieces[i].filesz for i in early)
    if early_bytes > BEFORE_RESUME_LIMIT:
        return (f"{_mib(early_bytes)} of its memory (MADV_DONTFORK, MADV_WIPEONFORK or private hugetlb) would have"
                f" to be read while it is stopped, more than the {_mib(BEFORE_RESUME_LIMIT)} a snapshot allows")
    return memory_obstacle(pid, regions, status)


#: The copy rate assumed for a normal dump when auto mode weighs it against a snapshot: the fastest
#: measured here (docs/benchmarks.md), so the normal dump's stop is never overestimated.
COPY_BYTES_PER_SECOND = 2 << 30
#: Below this a snapshot's stop is taken whatever the estimate says: on a loaded machine the estimate's
#: own parts (a few ms to stop a few threads) swing by more than the difference it would decide on.
LONGER_STOP_FLOOR = 0.25


def longer_stop(threads: int, seized_seconds: float, normal_bytes: int, early_bytes: int) -> Optional[str]:
    """Why a snapshot would stop the target longer than a normal dump, or None.

    A snapshot stops the target twice: once to clone it, once (after the write) to reap the clone, and
    the second stop costs what stopping its *threads* the first time did (*seized_seconds*). A normal
    dump stops it once, for the copy of *normal_bytes*; a snapshot also copies *early_bytes* while it is
    stopped (memory a clone cannot hold)."""
    normal = normal_bytes / COPY_BYTES_PER_SECOND
    snap = seized_seconds + early_bytes / COPY_BYTES_PER_SECOND
    if snap <= normal or snap <= LONGER_STOP_FLOOR:
        return None
    return (f"with {threads} threads, stopping it again to reap the snapshot (~{snap:.2f} s) would stop it longer"
            f" than reading its {_mib(normal_bytes)} in place (~{normal:.2f} s)")


def memory_obstacle(pid: int, regions: Sequence[Region], status: Dict[str, str]) -> Optional[str]:
    """Whether the host and the target's cgroup can pay for the snapshot if the target rewrote all its
    private memory while the dump is written (each page it writes is then copied for it)."""
    worst = sum(r.anonymous for r in regions if not r.shared and r.writable) + _kib(status.get("VmPTE"))
    meminfo = _meminfo()
    total = meminfo.get("MemTotal", 0)
    reserve = max(HOST_RESERVE_MIN, int(total * HOST_RESERVE_FRACTION))
    available = meminfo.get("MemAvailable")
    if available is not None and worst + reserve > available:
        return (f"the snapshot could cost up to {_mib(worst)} (the process's private memory, if it rewrote all of"
                f" it during the write) and the host has {_mib(available)} available, less a reserve of"
                f" {_mib(reserve)}")
    if _overcommit_mode() == 2:
        room = meminfo.get("CommitLimit", 0) - meminfo.get("Committed_AS", 0)
        commit = sum(r.size for r in regions if not r.shared and r.writable)
        if commit + reserve > room:
            return (f"strict overcommit (vm.overcommit_memory=2): the snapshot would commit {_mib(commit)} and"
                    f" only {_mib(room)} of commit is left")
    cgroup = cgroup_room(pid)
    if cgroup is not None:
        room, where = cgroup
        if worst + max(64 << 20, room // 20) > room:
            return (f"the snapshot could cost up to {_mib(worst)} and the process's cgroup {where} has only"
                    f" {_mib(room)} left before its memory limit")
    return None


def lock_may_be_held(pid: int, regions: Sequence[Region], counted: bool = True) -> bool:
    """Whether something may hold process *pid*'s mmap lock for good: only a read of one of its pages
    that waits on a file system that never answers can (a hung FUSE daemon, a dead NFS server;
    userfaultfd memory is an obstacle of its own), so only a file mapping on a FUSE or network file
    system with pages not in its page tables. Then the snapshot's clone, which needs that lock,
    is preceded by a probe of it (clone.SnapshotStopper._probe_lock); elsewhere it costs nothing.
    *counted*: the regions' page counts are of now; if not (guess.py), any such mapping may."""
    return any(not counted or r.present < r.size for r in on_remote_file_systems(pid, regions))


def find_syscall(pid: int) -> Optional[int]:
    """A `syscall` instruction in process *pid* (inject.find_syscall_instruction); its reads take the
    process's mmap lock, each a _bounded.blocking call (bounded in a worker of backend._bounded_reads)."""
    try:
        text = read_locked(f"/proc/{pid}/maps").decode("utf-8", "surrogateescape")
    except OSError:
        return None
    with MemoryReader(pid) as read_memory:
        return inject.find_syscall_instruction(pid, text, read_memory)


def reap_in(pid: int, child: int, local: int, syscall_at: int, threads: Dict[int, Any]) -> Optional[str]:
    """Make the stopped process *pid* reap its dead child *child* (our snapshot, numbered *local* in
    the target's pid namespace): one of *threads* (stopped, with their registers) runs
    wait4(local, NULL, __WALL|WNOHANG) and is put back. None when done (or nothing to do), else why not."""
    if thread_state(child, child) not in ("Z", "X"):
        return None  # already gone: the target exited and its children went to a reaper
    call = (libc.SYS_WAIT4, (local, 0, libc.WALL | libc.WNOHANG, 0))
    tried: List[str] = []
    for state in sorted(threads.values(), key=lambda t: t.tid != pid):
        if state.pending_signal or not inject.outside_rseq(state.tid, state.regs):
            continue
        if read_status(pid, state.tid).get("Seccomp") == "2":
            refused = seccomp.why_not(state.tid, [call], syscall_at)
            if refused:
                tried.append(refused)
                continue
        try:
            got = inject.Injector(state.tid, state.regs, syscall_at).call(call[0], *call[1])
        except inject.InjectionFailed as exc:
            tried.append(str(exc))
            continue
        if got == local or thread_state(child, child) not in ("Z", "X"):
            return None
        tried.append(f"wait4 in thread {state.tid} returned {got}")
        if len(tried) >= 3:
            break
    return (f"the snapshot (process {child}) is left as a zombie child of process {pid}"
            f" ({'; '.join(tried) or 'no thread could run wait4'}); {LEFT_ZOMBIE.format(pid=pid)}")


#: What a snapshot left unreaped means, said after why.
LEFT_ZOMBIE = "it holds no memory, only waitpid with __WALL would see it, and it goes when process {pid} exits"


class BufferSink:
    """Keeps what a MemoryCopier writes, to be written to the real sink later, in file order."""

    def __init__(self) -> None:
        self.chunks: List[Tuple[int, bytes]] = []

    def write_at(self, data: Any, offset: int) -> None:
        self.chunks.append((offset, bytes(data)))

    def replay(self, sink: Any, base: int = 0) -> None:
        """Write what was kept to *sink*, *base* bytes further on than it was written here."""
        for offset, data in sorted(self.chunks, key=lambda c: c[0]):
            sink.write_at(data, base + offset)
        self.chunks = []


def _meminfo() -> Dict[str, int]:
    out: Dict[str, int] = {}
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                key, _, value = line.decode("ascii", "replace").partition(":")
                out[key] = _kib(value)
    except OSError:
        pass
    return out


def _kib(text: Optional[str]) -> int:
    try:
        return int((text or "0").split()[0]) * 1024
    except (ValueError, IndexError):
        return 0


def _overcommit_mode() -> int:
    try:
        with open("/proc/sys/vm/overcommit_memory") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"
