"""The Linux backend: an ELF core of a live process, written by ptrace + /proc/PID/mem reads.

Plan reads /proc only (the target keeps running); write stops every thread, takes registers and
the memory the plan's rules select, and lets the threads go before the file is finished.
"""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import bisect
import contextlib
import ctypes
import errno
import os
import select
import threading
import time

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple, TypeVar
else:
    from .._typing import TypeVar

from .._bounded import closing, guarded, lineage
from .._record import record, replace as record_replace
from ..errors import BitnessMismatch, DumpFailed, InvalidDumpFile, ProcessNotFound, TargetRefused
from ..formats import elfcore
from ..kinds import DumpKind
from ..results import ProcessInfo, SizeEstimate
from .._platform import (HeldTarget, MemoryInfo, Plan, Platform, Session, Sink, SnapshotMode, TargetEvent, Tick,
                         WatchSupport, WriteOptions, WriteReport, without_snapshot)
from ..formats import linkmap
from .core import notes, selection
from .core.sizes import MAP_AT_LEAST
from .host import LinuxHost, create_exclusive
from .priority import raised
from .core.memory import (FileSink, MemoryCopier, MemoryReader, Piece, Prober, StreamSink,
                          remote_file_system, xstate_note_size)
from .proc import maps, pidfiles
from .proc.errors import foreign_tracer, memory_map_locked, target_error, traced_refusal
from .proc.pidfiles import PF_KTHREAD, read_stat, read_status, thread_ending, thread_state
from .ptrace import handover
from .ptrace.handover import target_runs
from .ptrace.regs import ThreadState
from .ptrace.stopper import SnapshotHolder, StoppedProcess, Stopper

if TYPE_CHECKING:
    import psutil

#: How long one read that takes the target's mmap lock (a chunk of its smaps, a pagemap block, 4 MiB of
#: its memory) may wait before the target is refused as "memory-map-locked". Such a read takes
#: microseconds to milliseconds, loaded or not; only a lock held for good (a read of one of its pages
#: stuck on a hung FUSE or NFS mount, a writer queued behind it) makes it wait seconds. Longer than the
#: 2 s a thread gets to stop (ptrace/stopper.py) because a legitimate holder may be slow too (the
#: target unmapping tens of GiB); short enough that a dump that meets the lock mid-copy does not hold
#: the target stopped for long (at most this, or max_pause if that is shorter).
MM_LOCK_SECONDS = 5.0

_T = TypeVar("_T")


def _bounded_reads(pid: int, fn: Callable[[], _T], *, stopped: bool = False, where: str = "",
                   let_go: Optional[Callable[[], None]] = None) -> _T:
    """*fn()* in a worker thread whose every read of process *pid*'s memory map or memory (made through
    _bounded.blocking) is given up on after MM_LOCK_SECONDS: TargetRefused "memory-map-locked" then.
    One thread for all the reads of a plan or a copy, however many (_bounded.call_within, each=True).
    *stopped*: *pid* is stopped for the dump (the refusal says it was let go). A write to the output
    *where* that its file system leaves unanswered (_bounded.output_call): DumpFailed "output-stalled".
    *let_go*: called first when this thread is interrupted (Ctrl-C), before it waits for a write of the
    worker's to end: the stopped target is let go at once, not after that wait."""
    from .._bounded import OutputStalled, Unanswered, call_within

    try:
        return call_within(fn, MM_LOCK_SECONDS, pidfiles.mm_key(pid), each=True, on_interrupt=let_go)
    except Unanswered:
        raise memory_map_locked(pid, MM_LOCK_SECONDS, stopped=stopped) from None
    except OutputStalled:
        raise output_stalled(pid, where) from None


def _bounded_writes(pid: int, where: str, fn: Callable[[], None]) -> None:
    """*fn()*, what is left to write once the target runs (a staged copy, the file's final size), in a
    worker whose writes are bounded (_bounded.output_call), so that a file system that stops answering
    holds neither dumplib nor the memory staged for the copy for good."""
    from .._bounded import OutputStalled, call_within

    try:
        call_within(fn, MM_LOCK_SECONDS, None, each=True)
    except OutputStalled:
        raise output_stalled(pid, where) from None


def _snapshot_checked(pid: int, options: WriteOptions) -> Tuple[WriteOptions, Tuple[str, ...]]:
    """*options* as the write must take them, and what to say, where no snapshot of *pid* can be taken
    for a reason known before anything is created or stopped: the binary running dumplib is not a Python
    interpreter (the snapshot's tracer is a process of its own, interpreter.py), or cgroup v2's freezer holds
    the target. snapshot=True is refused here; "auto" goes on without one, its output prepared for that."""
    if not options.snapshot or options.event is not None:
        return options, ()
    from .interpreter import child_command, not_an_interpreter

    why = not_an_interpreter() if child_command() is None else _frozen_v2(pid)
    if not why:
        return options, ()
    return record_replace(options, snapshot=False), without_snapshot(pid, options.snapshot, why)


def _told(report: WriteReport, told: Tuple[str, ...]) -> WriteReport:
    return record_replace(report, warnings=told + tuple(report.warnings)) if told else report


def _frozen_v2(pid: int) -> str:
    """Why no snapshot of *pid* can be taken when cgroup v2's freezer holds it, else "". Such a task
    can be stopped and read (ptrace interrupts v2's freezer trap: a dump without a snapshot is made),
    but the thread made to run the injected clone() goes back into the trap instead, and the snapshot
    would be given up only at the injected call's bound (2 s). v1's freezer is the stop's refusal."""
    from .proc.errors import frozen_cgroup, thaw_command

    group = frozen_cgroup(pid)
    if not group or not os.path.exists(os.path.join(group, "cgroup.freeze")):
        return ""
    return (f"the cgroup {group}, which holds it, is frozen (cgroup v2's freezer), and a frozen thread cannot"
            f" run the clone() a snapshot is made with; `{thaw_command(group)}` thaws that group and every group"
            " under it")


def output_stalled(pid: int, where: str, snapshot: bool = False) -> DumpFailed:
    from .._bounded import WRITE_STALL_SECONDS

    return DumpFailed(
        f"a write to {where or 'the output'} got no answer within {WRITE_STALL_SECONDS:g} s: its file system (a network"
        f" or FUSE mount, or a disk) has stopped answering. The dump of process {pid} was given up, and the process"
        f" runs on untraced{', its snapshot dropped' if snapshot else ''}. Dump to a local disk, or try again once"
        " that file system answers", pid=pid, reason="output-stalled")


def supported_machine() -> bool:
    # A 32-bit Python on an x86-64 kernel also says x86_64: it would write 64-bit cores wrongly.
    return os.uname().machine in ("x86_64", "AMD64") and ctypes.sizeof(ctypes.c_void_p) == 8


_EM_X86_64 = 62


def _refuse_other_abi(pid: int) -> None:
    """Refuse a 32-bit (i386) or x32 process: its registers and notes have other layouts, and an
    x86-64 core of it is misread by gdb (and its stacks missed by mini kinds)."""
    head = _exe_head(pid)
    if head is None:
        return  # gone, hidden, or not resident on a file system: the register set's size is checked when stopped
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return
    elf_class, machine = head[4], int.from_bytes(head[18:20], "little")
    if elf_class == 2 and machine == _EM_X86_64:
        return
    what = "an x32" if machine == _EM_X86_64 else "a 32-bit"
    raise BitnessMismatch(pid=pid, target_bits=32 if elf_class == 1 else 64, dumper_bits=64,
                          why=f"it is {what} process (ELF class {elf_class}, machine {machine}); dumplib writes"
                              " x86-64 cores only and a core of it would be misread. Use gdb's gcore for it")


def _exe_head(pid: int) -> Optional[bytes]:
    """The executable's first 20 bytes, or None where reading them could wait on a file system: an
    executable on a FUSE or network mount is not opened (its daemon or server may never answer, an
    abandoned read of it keeps dumplib from exiting, and a FUSE open may drop the program's pages).
    Its maps are read bounded (TargetRefused "memory-map-locked"): before Linux 6.16 that read takes
    the mmap lock, and this is the first such read of a dump or an estimate."""
    from .._bounded import Unanswered

    try:
        exe = os.readlink(f"/proc/{pid}/exe").encode("utf-8", "surrogateescape")
        lines = pidfiles.read_mm_file(pid, "maps", MM_LOCK_SECONDS).splitlines()
    except Unanswered:
        raise memory_map_locked(pid, MM_LOCK_SECONDS) from None
    except OSError:
        return None
    dev = next((fields[3].decode() for fields in (line.split(None, 5) for line in lines)
                if len(fields) == 6 and fields[5] == exe), None)
    if dev is None or remote_file_system(pid, dev):
        return None
    try:
        with open(f"/proc/{pid}/exe", "rb") as f:
            return f.read(20)
    except OSError:
        return None


@record(frozen=True)
class LinuxDetail:
    """What the plan saw; the writer re-derives it while the target is stopped, by the same rules."""

    segments: List[selection.Segment]


@record(frozen=True)
class CoreFacts:
    """What the writer produced, for verification."""

    threads: int  # how many PRSTATUS notes it wrote
    head: bytes  # ELF header, program headers and notes, as written


class LinuxPlatform(Platform):
    name = "linux-elfcore"
    extension = ".core"
    streams = True
    command_line_can_hang = True

    def normalise_flags(self, kind: DumpKind, flags: Optional[int]) -> Optional[int]:
        if flags is None:  # the kind's own rules: no mask to check (nor its IntFlag to build, ~1.5 M instructions)
            return None
        from .core.corefilter import linux_filter

        return linux_filter(flags)

    def process_table(self) -> Dict[int, str]:
        table: Dict[int, str] = {}
        try:
            entries = os.listdir("/proc")
        except OSError:
            return table
        for entry in entries:
            if entry.isascii() and entry.isdigit():
                # A listing: a long name whose command line could not be read now is left cut short
                # (comm); a lookup by name asks again, exactly, of any that may be the one it wants.
                name = pidfiles.name_of(int(entry), exact=False)
                if name is not None:  # None: it exited since the listing
                    table[int(entry)] = name
        return table

    def name_of(self, pid: int, exact: bool = True) -> Optional[str]:
        # One process, not a scan of all of them (process_table): the one-shot command's start-up.
        return pidfiles.name_of(pid, exact)

    def pid_exists(self, pid: int) -> bool:
        return pidfiles.pid_exists(pid)

    def started(self, pid: int) -> Optional[float]:
        return pidfiles.started(pid)

    def command_line(self, pid: int) -> Optional[List[str]]:
        return pidfiles.command_line(pid)

    def host_name(self) -> str:
        return os.uname().nodename  # what socket.gethostname() returns here, without importing socket

    def open(self, target: ProcessInfo, *, for_dump: bool = False, listing: bool = False) -> "LinuxSession":
        if not listing:
            _check(target)
        return LinuxSession.holding(target, listing)

    def host(self) -> LinuxHost:
        return _HOST

    def open_handles(self, proc: "psutil.Process") -> int:
        return int(proc.num_fds())

    def private_bytes(self, mem: MemoryInfo) -> Optional[int]:
        # Resident minus shared pages: USS would need a full smaps read per process.
        return max(0, int(mem.rss) - int(mem.shared))

    def watched_memory(self, mem: MemoryInfo) -> int:
        return int(mem.rss)  # the resident set

    def watch_events(self) -> WatchSupport:
        from .signalwatch import LinuxEvents  # only a watcher needs it

        return LinuxEvents()


def _check(target: ProcessInfo) -> None:
    """Refuse what cannot be dumped safely: this process, a zombie, a kernel thread, a traced or 32-bit process."""
    pid = target.pid
    status = read_status(pid)
    if not status:
        raise ProcessNotFound.exited(pid)
    if int(status.get("Tgid", pid)) == os.getpid():
        raise TargetRefused(
            f"process {pid} is this Python process: a process cannot ptrace itself. Dump it from"
            " another process, e.g. subprocess.run(['dumplib', 'dump', str(os.getpid())])",
            pid=pid,
            reason="self",
        )
    # A main thread that called pthread_exit is a zombie while the process lives on in its
    # other threads: that process is dumped through them (see _memory_pid).
    if status.get("State", "").startswith(("Z", "X")) and _memory_pid(pid) == pid:
        raise TargetRefused(
            f"process {pid} is a zombie: it has exited and holds no memory to dump; its parent"
            " (pid {0}) has not reaped it yet".format(status.get("PPid", "?")),
            pid=pid,
            reason="zombie",
        )
    stat = read_stat(pid)
    if stat is not None and stat.flags & PF_KTHREAD:
        raise TargetRefused(
            f"process {pid} ({target.name}) is a kernel thread: it has no user memory to dump",
            pid=pid,
            reason="kernel-thread",
        )
    traced = foreign_tracer(pid)
    if traced:
        raise traced_refusal(pid, traced[1], traced[0])
    _refuse_other_abi(pid)


class LinuxSession(Session):
    """One target held by a pidfd and its start time, from Platform.open to close.

    The start time is compared with the one taken when the target was resolved: a pid that
    meanwhile came to belong to another process is ProcessNotFound, now and at every later check.
    """

    def __init__(self, target: ProcessInfo, pidfd: int, ticks: int, listing: bool = False) -> None:
        super().__init__(target, listing)
        self._pidfd: Optional[int] = pidfd
        self._ticks = ticks

    @classmethod
    def holding(cls, target: ProcessInfo, listing: bool = False) -> "LinuxSession":
        pid = target.pid
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            raise ProcessNotFound.exited(pid) from None
        ticks = pidfiles.start_ticks(pid)  # read after the pidfd exists, so a live pidfd vouches for it
        if ticks is None or _pidfd_exited(fd) or not _same_start(target.started, ticks):
            os.close(fd)
            raise _reused(pid)
        return cls(target, fd, ticks, listing)

    def close(self) -> None:
        fd, self._pidfd = self._pidfd, None
        if fd is not None:
            os.close(fd)

    def _check_same(self) -> None:
        """ProcessNotFound unless the target is still the process that was opened."""
        pid = self.target.pid
        if self._pidfd is None:
            raise DumpFailed(f"the session on process {pid} was used after it was closed (a dumplib bug)", pid=pid)
        now = pidfiles.start_ticks(pid)
        if now is not None and now != self._ticks:
            raise _reused(pid)
        if now is None or _pidfd_exited(self._pidfd):
            raise ProcessNotFound.exited(pid)

    def plan(self, kind: DumpKind, flags: Optional[int]) -> Plan:
        # Its reads of the target's smaps, pagemap and memory are bounded as a whole (one worker thread).
        return _bounded_reads(self.target.pid, lambda: self._plan(kind, flags))

    def _plan(self, kind: DumpKind, flags: Optional[int]) -> Plan:
        target = self.target
        pid = target.pid
        mem = _memory_pid(pid)
        regions = _smaps(mem)
        sps = _syscall_stack_pointers(pid)
        threads = len(os.listdir(f"/proc/{pid}/task")) if os.path.isdir(f"/proc/{pid}/task") else 1
        # One Prober (its pagemap, the mounts read once) for the plan; the writer has its own, made while stopped.
        with Prober(mem) as prober:
            segments = _select(mem, regions, kind, flags, sps, [], prober, plan_only=True)
            parts = selection.estimate_bytes(segments, regions, threads, data_bytes=prober.data_bytes,
                                        xstate_size=xstate_note_size())
        if flags is None and kind is not DumpKind.FULL and threads > len(sps):
            parts["stacks"] += selection.unclaimed_stack_bytes(regions, sps)  # running threads' stacks
        if flags is None and kind in (DumpKind.MINI, DumpKind.MINIPLUS):  # thread pointers are read once stopped
            parts["metadata"] += selection.thread_area_allowance(threads)
        estimate = SizeEstimate(pid=pid, kind=kind.value, flags=flags, bytes=sum(parts.values()), breakdown=parts)
        return Plan(target=target, kind=kind, flags=flags, detail=LinuxDetail(segments), estimate=estimate)

    def write(self, plan: Plan, temp_path: str, options: WriteOptions) -> WriteReport:
        self._writable()
        self._check_same()  # before the file exists: a closed session or a gone target creates nothing
        options, told = _snapshot_checked(plan.target.pid, options)  # before the output is prepared for it
        # The output sized, reserved and mapped for the copy before the target is stopped (memory.py
        # FileSink): less kernel work while it is, where core/mapped.py finds it pays. Not where the target
        # already waits stopped (a watched exit, a handed-over signal: the time would be its stop), nor with
        # a snapshot (its copy runs after the target goes on). Only a mapped output is opened for reading.
        # Where it cannot be mapped (another file system, or ext4/xfs above the writeback rule), the copy
        # is staged in memory of ours if there is room (FileSink.stage): the same gain in the stop, the
        # writes after it.
        estimate = _preparable(plan, options)
        mapping = staging = False
        if estimate:
            from .core import mapped

            mapping = mapped.refusal(os.path.dirname(temp_path) or ".", estimate) is None
            staging = not mapping and mapped.stage_refusal(estimate) is None
        with closing(create_exclusive(temp_path, readable=mapping)) as fd:
            sink = FileSink(fd)
            try:
                if mapping or staging:
                    try:
                        (sink.prepare if mapping else sink.stage)(estimate)
                    except OSError:  # the write path then: its first write says what is wrong, if anything is
                        sink.release()
                        with contextlib.suppress(OSError):
                            os.ftruncate(fd, 0)  # a reservation made is given back: the written core stays sparse
                return _told(self._write_core(plan, sink, options, temp_path), told)
            finally:
                sink.release()  # staged memory too: given back even while a write from it is stuck

    def write_stream(self, plan: Plan, sink: Sink, options: WriteOptions, *, local: bool = False) -> WriteReport:
        options, told = _snapshot_checked(plan.target.pid, options)
        stream = StreamSink(sink)
        # A local compressed file or stdout: the copy staged in memory where there is room (StreamSink),
        # so the compressor and the disk or reader work once the target runs. Never an upload.
        estimate = _preparable(plan, options)
        if local and estimate:
            from .core import mapped

            if mapped.stage_refusal(estimate) is None:
                # With room over the estimate: a stream cannot take a write past the staged part before
                # all of it, so the first such write sends the whole staged part during the stop.
                stream.stage(estimate + max(_STREAM_SLACK, estimate // 32))
        try:
            return _told(self._write_core(plan, stream, options, "the output stream"), told)
        finally:
            stream.release()

    def _write_core(self, plan: Plan, sink: Any, options: WriteOptions, where: str) -> WriteReport:
        """Stop the target, write header, notes and memory to *sink* in file order, let the target go.

        With a snapshot, the target goes as soon as its clone exists, and memory is read from the clone.
        Its stop takes the mappings' VmFlags from an smaps read made just before it (snapshot/guess.py);
        where the clone shows they changed in between, the dump is made again, smaps read in the stop."""
        if not options.snapshot or options.event is not None or handover.is_handed_over(plan.target.pid):
            return self._write_core_once(plan, sink, options, where, guessing=False)
        from .snapshot.guess import Stale

        try:
            return self._write_core_once(plan, sink, options, where, guessing=True)
        except Stale as exc:  # nothing was written yet: the layout is finished before the head is
            report = self._write_core_once(plan, sink, options, where, guessing=False)
            first = getattr(exc, "stopped_seconds", 0.0)
            return record_replace(report, stopped_seconds=first + (report.stopped_seconds or 0.0), warnings=(
                f"the mappings of process {plan.target.pid} changed as it was being stopped ({exc}): it was stopped"
                " again, and dumped with its mappings read in that stop",) + report.warnings)

    def _write_core_once(self, plan: Plan, sink: Any, options: WriteOptions, where: str, *,
                         guessing: bool) -> WriteReport:
        self._writable()
        pid = plan.target.pid
        warnings: List[str] = []
        snap: Optional[_Snapshot] = None
        event, tick = options.event, options.tick
        self._check_same()
        # A handed-over process waits in the group-stop its watcher made (signalwatch.py): before that it
        # ran (its signal found it running), so a snapshot gains what it gains for any running process.
        state_before = ("" if not options.snapshot else "R" if handover.is_handed_over(pid)
                        else read_status(pid).get("State", ""))
        stale: Any = ()  # catches nothing, unless a guess is made (its module is loaded only then)
        if guessing:
            from .snapshot.guess import Stale as stale
        try:
            # At a watched exit the watcher's thread already holds every thread: the core is read in place.
            held = event.held if event is not None else None
            with _STOP_TURNS.taking(pid, tick) as turn:
                self._check_same()  # the wait for the turn may have been long: still the process opened?
                # The smaps walk made while the target still runs (snapshot/guess.py): in the stop, maps.
                guess = _bounded_reads(pid, lambda: _guess_before_stop(pid)) if guessing else None
                with raised(threading.get_native_id(), STOP_NICE) as urgent, \
                        (_holding(held, options.max_pause) if held is not None
                         else _stopper(options.snapshot)(pid, max_pause=options.max_pause)) as stopped:
                    self._check_same()  # the threads just stopped belong to the process that was checked
                    mem = _memory_pid(pid)
                    threads = _leader_first(pid, stopped.threads)
                    # Every read of the target's smaps, pagemap and memory from here is bounded: a lock
                    # held for good lets it go (the stopper's exit) with TargetRefused "memory-map-locked".
                    if options.snapshot and held is None:
                        # Only what needs the stop is read in it; the rest of the layout comes from the clone
                        # once the target runs, or from the target if no snapshot is taken (_Layout).
                        layout = _bounded_reads(
                            pid, lambda: _stopped_layout(pid, mem, threads, plan, options, later=True, guess=guess),
                            stopped=True)
                        snap = _take_snapshot(pid, options.snapshot, stopped, mem, layout, state_before, warnings)
                        if snap is None:
                            if layout.guessed:  # no clone to check the guess against: smaps in the stop after all
                                layout = _bounded_reads(
                                    pid, lambda: _stopped_layout(pid, mem, threads, plan, options), stopped=True)
                            _bounded_reads(pid, lambda: layout.finish(mem), stopped=True)
                        pieces, head, offsets, end = layout.pieces, layout.head, layout.offsets, layout.end
                    else:
                        regions, pieces, head, offsets, end = _bounded_reads(
                            pid, lambda: _lay_out(pid, mem, threads, plan, options), stopped=True)
                        if options.snapshot:
                            warnings.append("no snapshot at a process's exit: it will not run on, so it was dumped in"
                                            " place")
                    total = sum(p.filesz for p in pieces)
                    if snap is None:
                        # The copy in a worker: given up on at a read stuck on the target's mmap lock; its
                        # writes to the sink and its ticks are guarded (none once this thread has gone on).
                        checked = _pause_checked(stopped, tick)

                        def copy() -> None:
                            sink.write_at(head, 0)
                            _copy(mem, sink, lambda n: guarded(checked, n), pieces, offsets, total)

                        _bounded_reads(pid, copy, stopped=True, where=where, let_go=getattr(stopped, "release", None))
                        stopped.check_pause()  # every byte above was read while the target was stopped
                        if not stopped.alive():
                            raise DumpFailed.target_exited(pid)
                    else:
                        snap.holder.resume_target()  # the target runs on from here; the clone holds its memory
                        target_runs(pid)  # a handed-over one too: its watcher takes it back and delivers its signal
                        turn()  # and another dump of it may stop it now, while this one copies the clone
                        urgent.restore()  # the copy from the clone competes with the running target: no boost
                        try:
                            _lay_out_from_clone(pid, snap, layout)  # raises guess.Stale for a stop made again
                            _released(options)  # not before: the hasher must not run in a second stop
                            pieces, head, offsets, end = layout.pieces, layout.head, layout.offsets, layout.end
                            # The head too, not before: a stalled stream must not hold the target.
                            _copy_from_clone(pid, snap, sink, tick, head, pieces, offsets, where)
                            if not snap.intact():
                                raise _snapshot_lost(pid)
                            if not stopped.alive():  # the clone holds all it had: the dump is whole (docs/api.md)
                                warnings.append(f"process {pid} exited while its memory was read from its snapshot:"
                                                " the dump shows it as it was when it was stopped")
                        finally:
                            if handover.is_handed_over(pid):
                                # The clone is dropped with the target stopped again, by the snapshot's tracer
                                # (snapshot/clone.py): the watcher, its tracer by now, lets go of it for that.
                                with handover.held_again(pid):
                                    stopped.__exit__(None, None, None)
            # The target runs again from here; what is left is our own output. A process the signal
            # watcher handed over is taken back now (its signal delivered), not after the flush and checks.
            target_runs(pid)
            _released(options)
            # What a staged copy still writes, it writes now, ticking (the disk's watchdog, cancel_dumps)
            # from 0 again: the bytes written, where the stop's ticks counted those read (progress, which
            # never goes back, stays at those).
            _bounded_writes(pid, where, lambda: sink.finish(end, tick))
        except OSError as exc:
            raise _write_error(exc, where, pid) from None
        except stale as exc:  # the dump is made again (_write_core): this stop counts too
            exc.stopped_seconds = stopped.stopped_seconds
            raise
        if mem != pid:
            warnings.append(f"the main thread of process {pid} has exited (it called pthread_exit) while"
                            f" {len(threads)} other threads run on: the core holds those threads, and its memory"
                            f" was read through thread {mem}")
        if snap is not None:
            warnings += snap.warnings + snap.holder.snapshot_warnings
        # A handed-over process was held from its signal's stop to its watcher's SIGCONT: that is its stop.
        return WriteReport(stopped_seconds=handover.stopped_seconds(pid, stopped.stopped_seconds),
                           warnings=tuple(warnings), flags=plan.flags,
                           facts=CoreFacts(threads=len(threads), head=head), snapshot=snap is not None,
                           snapshot_bytes=snap.holder.snapshot_bytes if snap is not None else None)

    def verify(self, path: str, plan: Plan, report: WriteReport) -> Tuple[str, ...]:
        verify_core(path, plan.target.pid, _facts(report).threads)
        return ()

    def verify_stream(self, plan: Plan, report: WriteReport, size: int) -> None:
        written = _facts(report)
        try:
            core = elfcore.parse_head(written.head, size, "the output stream")
        except InvalidDumpFile as exc:
            raise DumpFailed(f"the core sent to the stream is unusable: {exc.message}", pid=plan.target.pid) from None
        check_core(core, plan.target.pid, written.threads)


#: Staged memory of a stream beyond its estimate, at least (StreamSink.stage): the estimate of a 2 GiB
#: core was 0.3 MB short of it here (the notes' real size, the target's last allocations).
_STREAM_SLACK = 16 << 20


def _released(options: WriteOptions) -> None:
    """Tell the caller the target runs again (WriteOptions.released: the sidecar's hasher starts)."""
    if options.released is not None:
        options.released()


def _preparable(plan: Plan, options: WriteOptions) -> int:
    """The estimate by which the output may be mapped or staged before the target is stopped, or 0
    where it may not: where the target already waits stopped (a watched exit, a handed-over signal:
    that time would be its stop), with a snapshot (its copy runs after the target goes on), without an
    estimate, or below MAP_AT_LEAST (whose dumps never import core/mapped.py: start-up)."""
    if (options.event is not None or options.snapshot or handover.is_handed_over(plan.target.pid)
            or plan.estimate is None or plan.estimate.bytes < MAP_AT_LEAST):
        return 0
    return plan.estimate.bytes


def _lay_out(pid: int, mem: int, threads: List[ThreadState], plan: Plan,
             options: WriteOptions) -> Tuple[List[maps.Region], List[Piece], bytes, List[int], int]:
    """With the target stopped: its mappings, what the core takes of them (pieces), the core's head
    (ELF header, program headers, notes), each piece's file offset and the file's end."""
    layout = _stopped_layout(pid, mem, threads, plan, options)
    layout.finish(mem)
    return layout.regions, layout.pieces, layout.head, layout.offsets, layout.end


def _stopped_layout(pid: int, mem: int, threads: List[ThreadState], plan: Plan, options: WriteOptions, *,
                    later: bool = False, guess: Any = None) -> "_Layout":
    """What of the layout needs the target stopped; *later* (a snapshot's): the pieces of private
    anonymous memory that pagemap must be asked about are left to _Layout.finish (see there).
    *guess* (a snapshot's, snapshot/guess.py): its regions stand for smaps where the stopped target's
    maps is its lines exactly and no thread can use a userfaultfd; their page counts are not trusted."""
    regions: Optional[List[maps.Region]] = None
    if guess is not None:
        from .snapshot.guess import no_userfaultfd

        if guess.holds(_read_proc(mem, "maps", locked=True).decode("utf-8", "surrogateescape")) and no_userfaultfd(
                mem, [t.tid for t in threads], guess.check_seconds()):
            regions = guess.regions
    guessed = regions is not None
    if regions is None:
        regions = _smaps(mem)
    # One Prober (its pagemap, the mounts read once, now: the plan's may be old) for the whole layout.
    with Prober(mem) as prober:
        segments = _select(mem, regions, plan.kind, plan.flags, [t.stack_pointer for t in threads],
                           [t.thread_pointer for t in threads], prober, plan_only=False)
        note_bytes = _notes(pid, threads, regions, options.comment, options.signature, mem=mem, event=options.event)
        # Memory not taken, or past the end of a mapped file, gets no PT_LOAD: gdb reads
        # a load's unstored tail as zeros, which is the truth only for untouched memory.
        # A described segment (an object's code) is a PT_LOAD storing nothing, as the kernel writes it.
        segments = [s for s in segments if s.dump_start == s.start or s.describe]
        parts: List[Any] = [
            (Piece(s.start, s.end, 0, s.flags, "all", s.region),) if s.describe
            else s if later and _clone_tells(s, guessed) else tuple(prober.pieces(s, counted=not guessed))
            for s in segments]
    return _Layout(regions, parts, note_bytes, guessed=guessed)


def _clone_tells(seg: selection.Segment, guessed: bool = False) -> bool:
    """Whether a snapshot's clone gives *seg*'s pieces as the stopped target would: private anonymous
    memory (not MADV_DONTFORK or MADV_WIPEONFORK, not hugetlb: read before resume) in part touched,
    whose pagemap must be read (Prober.pieces). clone() copies such a mapping's page tables as they are
    at its instant (present, swapped and zero-page entries alike), and the clone never runs; the copy
    from it reads its pagemap anyway. A file mapping's page tables are not copied (its residency is the
    stopped target's to tell), nor is the size of a mapped object the clone's to tell (it changes).
    *guessed*: the page counts are from before the stop, so every such mapping is left to the clone,
    whose smaps gives its counts (guess.stale) and whose pagemap its pieces."""
    r = seg.region
    return (seg.anon and r is not None and not r.file_backed and not r.shared
            and not r.vmflags & {"dc", "wf", "ht"} and (guessed or 0 < r.present < r.size))


class _Layout:
    """A core's layout, in two halves. Made with the target stopped (_stopped_layout): its mappings as
    they were then (smaps: VmFlags and all), the selection, the notes (registers taken at the stop),
    and the pieces of every segment but those _clone_tells of. finish() finds those from a process's
    pagemap (a snapshot's clone once the target runs again, or the stopped target itself) and lays
    out the file: PT_LOADs, file offsets, the head (ELF header, program headers, notes)."""

    def __init__(self, regions: List[maps.Region], parts: List[Any], note_bytes: bytes, *,
                 guessed: bool = False) -> None:
        self.regions = regions
        #: The regions are snapshot/guess.py's, read before the stop: their page counts are not the
        #: stop's until confirmed by the clone (confirm), and finish() asks pagemap rather than trust them.
        self.guessed = guessed
        self._counted = not guessed
        self._parts = parts  # per segment: its pieces (a tuple), or the Segment, its pieces not found yet
        self._note_bytes = note_bytes
        #: The pieces found so far (all, once finished), in file order.
        self.pieces: List[Piece] = [p for part in parts if isinstance(part, tuple) for p in part]
        self.head = b""
        self.offsets: List[int] = []
        self.end = 0

    def finish(self, pid: int) -> None:
        """The pieces left, from process *pid*'s pagemap, and the file's layout (idempotent)."""
        if any(not isinstance(part, tuple) for part in self._parts):
            with Prober(pid) as prober:
                self._parts = [part if isinstance(part, tuple) else tuple(prober.pieces(part, counted=self._counted))
                               for part in self._parts]
            self.pieces = [p for part in self._parts for p in part]
        loads = [(p.start, p.end - p.start, p.flags, p.filesz) for p in self.pieces]
        header, self.offsets, self.end = elfcore.layout(loads, len(self._note_bytes))
        self.head = header + self._note_bytes

    def confirm(self, clone_smaps: str) -> None:
        """guess.Stale unless the clone's smaps shows the guessed mappings as they were at its instant;
        then the page counts of private anonymous memory are the clone's (its instant's)."""
        from .snapshot.guess import Stale, stale

        if self.guessed and not self._counted:
            why = stale(self.regions, maps.parse_smaps(clone_smaps))
            if why:
                raise Stale(why)
            self._counted = True


def _facts(report: WriteReport) -> "CoreFacts":
    facts = report.facts
    assert isinstance(facts, CoreFacts), "a report from another platform's writer"
    return facts


def _select(pid: int, regions: Sequence[maps.Region], kind: DumpKind, flags: Optional[int],
            sps: Sequence[int], thread_pointers: Sequence[int], prober: Prober, *,
            plan_only: bool) -> List[selection.Segment]:
    keep: List[int] = []
    exe_paths: List[str] = []
    ends: List[int] = []
    tls: List[Tuple[int, int]] = []
    # What is read here must be resident, or not on a file system; and on a FUSE or network mount it is
    # read by a child (_FarSmallReads), since a page reclaimed since its check would be fetched.
    with MemoryReader(pid) as read_memory, _FarSmallReads(pid, regions, prober) as far:
        if flags is None and kind is not DumpKind.FULL:
            auxv = linkmap.parse_auxv(_read_proc(pid, "auxv"))
            starts = [r.start for r in regions]

            def read(address: int, n: int) -> Optional[bytes]:
                i = bisect.bisect_right(starts, address) - 1
                r = regions[i] if i >= 0 and address < regions[i].end else None
                first = address - address % maps.PAGE
                if r is not None and prober.on_file_system(r):
                    if not all(prober.resident(p) for p in range(first, min(address + n, r.end), maps.PAGE)):
                        return None  # the link_map walk stops there, as at unreadable memory
                    if far.holds(r):
                        return far.read(address, n)
                return read_memory(address, n)

            objects: List[int] = []
            keep = linkmap.linkmap_addresses(auxv, read, objects, ends)
            exe_paths = _exe_and_loader(pid, regions, auxv)
            if kind in (DumpKind.MINI, DumpKind.MINIPLUS):
                exe_paths += selection.paths_holding(regions, objects)
                anon_read = _anonymous_reader(pid, regions, read_memory)
                areas = [linkmap.thread_area_ranges(tp, anon_read) for tp in thread_pointers]
                tls = [r for a in areas for r in a[:2]] + [r for a in areas for r in a[2:]]  # blocks last
        if plan_only:
            headers = selection.elf_header_starts(regions)
        else:
            headers = selection.elf_header_starts(regions, pid, lambda r: not prober.on_file_system(r) or (
                not far.holds(r) and prober.resident(r.start)))
            for r in regions:  # the first pages of files on FUSE or network mounts: read by the child
                if far.holds(r) and r.offset == 0 and r.readable and prober.resident(r.start):
                    headers[r.start] = far.read(r.start, 4) == b"\x7fELF"
    segments = selection.select(regions, kind, filter_bits=flags, stack_pointers=sps, keep_pages=keep,
                           exe_paths=exe_paths, elf_headers=headers, image_ends=ends)
    if not tls:
        return segments
    # What the target wrote at its thread pointers adds at most what the estimate allowed for.
    tls = selection.thread_areas_within(tls, regions, segments, selection.thread_area_allowance(len(thread_pointers)))
    return selection.select(regions, kind, filter_bits=flags, stack_pointers=sps, keep_pages=keep,
                       exe_paths=exe_paths, elf_headers=headers, image_ends=ends, keep_ranges=tls)


_HOST = LinuxHost()


def verify_core(path: str, pid: int, threads: int) -> elfcore.ElfCore:
    """Read the core back: ELF header, one PRSTATUS per thread, the notes gdb needs, loads in the file."""
    try:
        core = elfcore.read_elfcore(path)
    except InvalidDumpFile as exc:
        raise DumpFailed(f"the written core is unusable and was removed: {exc.message}", pid=pid) from None
    return check_core(core, pid, threads)


def check_core(core: elfcore.ElfCore, pid: int, threads: int) -> elfcore.ElfCore:
    problems = list(core.problems)
    if threads and len(core.threads) != threads:
        problems.append(f"{len(core.threads)} thread notes for {threads} threads")
    for needed, label in ((elfcore.NT_PRPSINFO, "PRPSINFO"), (elfcore.NT_AUXV, "AUXV"), (elfcore.NT_FILE, "FILE")):
        if needed not in core.note_types():
            problems.append(f"no NT_{label} note")
    if core.pid is not None and core.pid != pid:
        problems.append(f"it describes process {core.pid}, not {pid}")
    if problems:
        raise DumpFailed(f"the core of process {pid} failed verification ({'; '.join(problems)}); it was removed",
                         pid=pid, reason="unverified")
    return core


def _notes(pid: int, threads: Sequence[ThreadState], regions: Sequence[maps.Region], comment: Optional[str],
           signature: str, *, mem: Optional[int] = None, event: Optional[TargetEvent] = None) -> bytes:
    mem = mem or pid  # what needs the process's memory is read through a live thread
    stat = read_stat(pid)
    if stat is None:
        raise DumpFailed.target_exited(pid)
    status = read_status(pid)
    uid = int(status.get("Uid", "0").split()[0])
    gid = int(status.get("Gid", "0").split()[0])
    ids = (pid, stat.ppid, stat.pgrp, stat.session)
    comm = _read_proc(pid, "comm").rstrip(b"\n")  # any bytes a process set with PR_SET_NAME
    psinfo = notes.prpsinfo(pid, stat, uid, gid, _read_proc(mem, "cmdline", locked=True), comm)
    body = notes.build_notes(threads, ids=ids, psinfo=psinfo, auxv=_read_proc(mem, "auxv"), regions=regions,
                             event=event)
    body += notes.note(b"DUMPLIB", elfcore.NT_DUMPLIB_SIGNATURE, signature.encode("utf-8"))
    if comment:
        body += notes.note(b"DUMPLIB", elfcore.NT_DUMPLIB_COMMENT, comment.encode("utf-8", "surrogateescape"))
    return body


#: The nice value of dumplib's thread while the target is stopped (threads it starts then, the tracer
#: and a snapshot's helper, inherit it). The stop is the target's outage: on a loaded host a thread at
#: nice 0 gets a share of a CPU and the stop stretches with the load (at load 14 on 2 CPUs a 512 MiB
#: copy ran 0.6 s of CPU in 7 s). -10 outweighs ~9 busy nice-0 threads without taking the machine;
#: raised only with CAP_SYS_NICE (root), never lowered, and put back once the target runs again.
STOP_NICE = -10


def _stopper(snapshot: SnapshotMode) -> Callable[..., Stopper]:
    """What stops the target: a tracer thread here, or for a snapshot a tracer process that outlives
    dumplib (snapshot/remote.py), since a snapshot's injected call must be put back whatever happens."""
    if snapshot:
        from .snapshot.remote import RemoteStoppedProcess

        return RemoteStoppedProcess
    return StoppedProcess


def _holding(held: HeldTarget, max_pause: Optional[float]) -> Stopper:
    """The watcher's own hold on a process at its exit (signalwatch.HeldAtExit), read in place."""
    from .signalwatch import HeldAtExit

    assert isinstance(held, HeldAtExit), "a held process from another platform's watcher"
    return held.holding(max_pause)


#: How long a dump waits for another dump of the same process in this program to let it go. Each
#: holds it at most its max_pause (60 s by default); a second stop waits its turn rather than fail.
TURN_PATIENCE = 300.0


class _StopTurns:
    """One stop at a time per process, within this program: ptrace gives a thread one tracer, so a
    second dump of a pid (another thread of a library caller, a watcher's sampled dump) waits until
    the first has let the target go, calling its tick so cancel_dumps and the watchdog still reach it."""

    def __init__(self) -> None:
        self._busy: Dict[int, int] = {}
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def taking(self, pid: int, tick: Optional[Tick]) -> Iterator[Callable[[], None]]:
        """Hold *pid*'s turn; yields a release (idempotent) for giving it back before the block ends,
        once the target runs again (a snapshot's copy goes on from the clone)."""
        deadline = time.monotonic() + TURN_PATIENCE
        me = threading.get_ident()
        held = False

        def release() -> None:
            nonlocal held
            with self._changed:
                if held:
                    del self._busy[pid]
                    held = False
                    self._changed.notify_all()

        try:
            while True:
                with self._changed:
                    owner = self._busy.get(pid)
                    if owner is None:
                        self._busy[pid], held = me, True
                        break
                    if owner in lineage():  # a dump started from another dump's callback would wait for itself
                        raise DumpFailed(f"process {pid} is already being dumped by this thread (a dump asked for"
                                         " from inside another dump's callback); nothing was written", pid=pid,
                                         reason="busy")
                    self._changed.wait(min(0.1, max(0.0, deadline - time.monotonic())))
                if tick is not None:
                    tick(0)
                if time.monotonic() > deadline:
                    raise DumpFailed(f"another dump of process {pid} in this program kept it for"
                                     f" {TURN_PATIENCE:.0f} s; nothing was written. Try again once that dump has ended",
                                     pid=pid, reason="busy")
            yield release
        finally:
            release()


_STOP_TURNS = _StopTurns()


def _copy(pid: int, sink: Any, tick: Tick, pieces: Sequence[Any], offsets: Sequence[int], total: int) -> None:
    copier = MemoryCopier(pid, sink, tick, total=total)
    try:
        copier.copy_pieces(pieces, offsets)
    finally:
        copier.close()


def _take_snapshot(pid: int, mode: SnapshotMode, stopped: Stopper, mem: int, layout: "_Layout", state_before: str,
                   warnings: List[str]) -> Optional["_Snapshot"]:
    """Clone the stopped target and read now what the clone cannot hold; None (with a warning, or
    TargetRefused for snapshot=True) where no snapshot may or could be taken: the target is then
    exactly as it was, still stopped, and the dump goes on without one."""
    from .snapshot import policy as snapshot  # only for a snapshot: the one-shot command's start-up stays lean
    from .snapshot.inject import InjectionFailed

    if not isinstance(stopped, SnapshotHolder):
        raise DumpFailed(f"the stopper of process {pid} cannot take a snapshot (a dumplib bug)", pid=pid)
    regions = layout.regions
    # The pieces not found yet (_clone_tells) are private anonymous memory: never read before resume.
    early, shared_after = snapshot.taken_before_resume(layout.pieces)
    why = snapshot.obstacle(pid, regions, layout.pieces, early, state_before, stopped.threads)
    if why is None and mode == "auto":  # asked for outright, one is taken even if it stops the target longer
        early_bytes = sum(layout.pieces[i].filesz for i in early)
        if snapshot.longer_stop(len(stopped.threads), stopped.seized_seconds, 0, early_bytes):
            # It may be (thousands of threads): weighed against the whole size, from the stopped target.
            _bounded_reads(pid, lambda: layout.finish(mem), stopped=True)
            early, shared_after = snapshot.taken_before_resume(layout.pieces)
            why = snapshot.longer_stop(len(stopped.threads), stopped.seized_seconds,
                                       sum(p.filesz for p in layout.pieces), early_bytes)
    syscall_at = None if why else _bounded_reads(pid, lambda: snapshot.find_syscall(mem), stopped=True)
    if why is None and syscall_at is None:
        why = "no system call instruction was found in its [vdso] or code to make it clone itself"
    child = None
    if why is None:
        assert syscall_at is not None
        try:
            if snapshot.lock_may_be_held(pid, regions, counted=not layout.guessed):
                from .snapshot.remote import RemoteStoppedProcess

                assert isinstance(stopped, RemoteStoppedProcess), "a snapshot's stopper is its helper process"
                child = stopped.take_snapshot(syscall_at, probe_lock=True, resume=not early)
            else:
                # With nothing to read before resume, the target is let go with the clone's making.
                child = stopped.take_snapshot(syscall_at, resume=not early)
        except InjectionFailed as exc:
            why = f"it could not be made to clone itself: {exc}"
    if child is None:
        warnings.extend(without_snapshot(pid, mode, why or "unknown"))
        return None
    snap = _Snapshot(child, mem, stopped)
    _bounded_reads(pid, lambda: snap.read_before_resume([layout.pieces[i] for i in early]), stopped=True)
    if shared_after:
        snap.warnings.append(f"{shared_after} bytes of shared memory (MAP_SHARED) were read after the target resumed:"
                             " they show that memory as it was when read, not at the snapshot's instant")
    return snap


def _lay_out_from_clone(pid: int, snap: "_Snapshot", layout: "_Layout") -> None:
    """layout.finish from the clone's pagemap, once the target runs (bounded, as the copy is)."""
    def finish() -> None:
        try:
            if layout.guessed:  # the clone's smaps: what the guess got right, and the counts at its instant
                layout.confirm(pidfiles.read_locked(f"/proc/{snap.child}/smaps").decode("utf-8", "surrogateescape"))
            layout.finish(snap.child)
            if not snap.intact():  # a pagemap read of a clone killed meanwhile finds nothing, quietly
                raise _snapshot_lost(pid)
        except OSError as exc:
            if not snap.intact():
                raise _snapshot_lost(pid) from None
            raise DumpFailed(f"reading the page map of the snapshot of process {pid} (its clone, process"
                             f" {snap.child}) failed: {exc}; nothing was kept", pid=pid, errno=exc.errno) from None
    _from_clone(pid, snap, finish)


def _copy_from_clone(pid: int, snap: "_Snapshot", sink: Any, tick: Optional[Tick], head: bytes,
                     pieces: Sequence[Any], offsets: Sequence[int], where: str) -> None:
    checked = (lambda n: guarded(tick, n)) if tick is not None else None

    def copy() -> None:
        sink.write_at(head, 0)
        snap.copy_rest(sink, checked, pieces, offsets, sum(p.filesz for p in pieces))
    _from_clone(pid, snap, copy, where)


def _snapshot_lost(pid: int) -> DumpFailed:
    return DumpFailed(f"the snapshot of process {pid} was killed while its memory was read (the OOM killer?);"
                      " nothing was kept. Try again, or without --snapshot", pid=pid, reason="snapshot-lost")


def _from_clone(pid: int, snap: "_Snapshot", fn: Callable[[], None], where: str = "") -> None:
    """*fn* (a read of the clone: its pagemap, or its memory) in a bounded worker, as the live copy is
    (_bounded_reads): a read of the clone's memory can wait on a file system for good (a page of a file
    it maps on a stalled FUSE or NFS mount, found resident when the target was stopped and reclaimed
    since), and is then given up on after MM_LOCK_SECONDS with TargetRefused "memory-map-locked"; the
    worker's writes and ticks are guarded, so none reaches the output once this thread has gone on, and
    bounded: a write to an output whose file system stops answering is given up on (output_stalled)."""
    from .._bounded import OutputStalled, Unanswered, call_within

    try:
        call_within(fn, MM_LOCK_SECONDS, pidfiles.mm_key(snap.child), each=True)
    except OutputStalled:
        raise output_stalled(pid, where, snapshot=True) from None
    except Unanswered:
        raise TargetRefused(
            f"a read of the snapshot of process {pid} (its clone, process {snap.child}) got no answer within"
            f" {MM_LOCK_SECONDS:g} s: a page it maps of a file on a FUSE or network mount has left memory since"
            " the snapshot was taken, and that file system does not answer. The read was given up on: nothing"
            f" was kept, the clone is dropped, and process {pid} runs on untraced; try again once that mount"
            " answers", pid=pid, reason="memory-map-locked") from None


class _Snapshot:
    """The clone a snapshot dump reads from, and what was read from the stopped target instead."""

    def __init__(self, child: int, target: int, holder: SnapshotHolder) -> None:
        self.child, self.target = child, target
        #: What holds the clone (and held the target stopped until resume_target).
        self.holder = holder
        #: Piece start address -> snapshot.BufferSink, written from the piece's own place in the file.
        self.buffers: Dict[int, Any] = {}
        self.warnings: List[str] = []

    def read_before_resume(self, pieces: Sequence[Any]) -> None:
        """Read *pieces* from the stopped target, before the file is laid out (_Layout.finish): each
        kept as written from offset 0, and put in its place by copy_rest."""
        from .snapshot.policy import BufferSink

        for piece in pieces:
            buffer = self.buffers[piece.start] = BufferSink()
            _copy(self.target, buffer, lambda n: None, [piece], [0], piece.filesz)

    def copy_rest(self, sink: Any, tick: Optional[Tick], pieces: Sequence[Any], offsets: Sequence[int],
                  total: int) -> None:
        """Everything in file order: the clone's memory, with the pieces read before resume in their places."""
        copier = None
        try:
            copier = MemoryCopier(self.child, sink, tick, total=total)  # opens the clone's memory: it may be gone
            start = 0
            for i in [i for i, p in enumerate(pieces) if p.start in self.buffers]:
                copier.copy_pieces(pieces[start:i], offsets[start:i])
                self.buffers.pop(pieces[i].start).replay(sink, offsets[i])
                start = i + 1
            copier.copy_pieces(pieces[start:], offsets[start:])
        except DumpFailed as exc:
            if exc.reason != "exited" or self.intact():
                raise
            # The clone was killed (its reads found no address space): _write_core says so, snapshot-lost.
        finally:
            if copier is not None:
                copier.close()

    def intact(self) -> bool:
        """Whether the clone lived through the whole read (else some reads saw no memory at all). Killed
        (the OOM killer, an operator), it is no zombie yet while it exits, its memory already gone."""
        return self.holder.snapshot_pid == self.child and not thread_ending(self.child, self.child)


def _pause_checked(stopped: Stopper, tick: Optional[Tick]) -> Tick:
    """The writer's tick, first raising max-pause once the tracer has let the target go."""
    # A snapshot's helper answers over a pipe: between chunks it is asked only now and then
    # (snapshot/remote.py); the other stoppers' check is an attribute read.
    check = getattr(stopped, "check_pause_soon", stopped.check_pause)

    def checked(written: int) -> None:
        check()
        if tick is not None:
            tick(written)
    return checked


def _memory_pid(pid: int) -> int:
    """Where the process's memory and memory-backed /proc files are read: the process itself, or a live
    thread once its main thread has called pthread_exit (a zombie, whose smaps and auxv are empty)."""
    if thread_state(pid, pid) not in ("Z", "X"):
        return pid
    try:
        tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return pid
    return next((t for t in tids if thread_state(pid, t) not in ("", "Z", "X")), pid)


def _same_start(started: Optional[float], ticks: int) -> bool:
    """Whether *ticks* is the start time (seconds since the epoch, pidfiles.started) seen at resolve."""
    if started is None:
        return True
    # pidfiles.started (like psutil's create_time) is boot time + ticks / CLK_TCK: the same sum, to within rounding
    # (less than one tick, 10 ms, so two processes started a tick apart differ).
    tick = 1.0 / os.sysconf("SC_CLK_TCK")
    boot = pidfiles.boot_time()
    if boot is None:
        return True  # no btime to compare with: the pidfd alone vouches for the process
    return abs(boot + ticks * tick - started) < tick / 2


def _pidfd_exited(fd: int) -> bool:
    """A pidfd reads ready once its process has exited (every thread, not only the leader)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def _reused(pid: int) -> ProcessNotFound:
    return ProcessNotFound(pid, f"process {pid} exited, and its pid now belongs to another process; nothing"
                                " was dumped. Find the process again (`dumplib ps`) and dump it by its new pid")


def _leader_first(pid: int, threads: Dict[int, ThreadState]) -> List[ThreadState]:
    return sorted(threads.values(), key=lambda t: (t.tid != pid, t.tid))


def _write_error(exc: OSError, where: str, pid: int) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DumpFailed(f"the disk holding {os.path.dirname(where) or where} filled up while writing the dump of"
                          f" process {pid}; the partial file was removed. Free space or dump to another volume",
                          pid=pid, errno=exc.errno, reason="disk-full")
    if exc.errno == errno.EPIPE:
        return DumpFailed(f"the reader of {where} went away before the dump of process {pid} was complete;"
                          " what it received is incomplete", pid=pid, errno=exc.errno, reason="broken-pipe")
    return DumpFailed(f"writing the dump of process {pid} to {where} failed: {exc}", pid=pid, errno=exc.errno)


def _read_proc(pid: int, name: str, *, locked: bool = False) -> bytes:
    """/proc/PID/NAME; *locked*: a file whose reads take the process's mmap lock (smaps, cmdline), read
    a chunk per _bounded.blocking call (pidfiles.read_locked)."""
    try:
        if locked:
            return pidfiles.read_locked(f"/proc/{pid}/{name}")
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError as exc:
        raise target_error(exc, pid, f"read /proc/{pid}/{name} of") from None


def _guess_before_stop(pid: int) -> Any:
    """A snapshot's guess of the mappings (snapshot/guess.py), read with the target running; None where
    one cannot serve (a userfaultfd in its descriptor table or held by any other process, a MADV_DONTFORK
    mapping: the stop reads smaps then, as it must)."""
    from .snapshot import guess

    mem = _memory_pid(pid)
    started = time.monotonic()
    text = _read_proc(mem, "smaps", locked=True)
    found = guess.read(text.decode("utf-8", "surrogateescape"), time.monotonic() - started)
    return (found if found is not None and guess.no_userfaultfd(mem, ()) and guess.no_userfaultfd_elsewhere(pid)
            else None)


def _smaps(pid: int) -> List[maps.Region]:
    return maps.parse_smaps(_read_proc(pid, "smaps", locked=True).decode("utf-8", "surrogateescape"))


def _syscall_stack_pointers(pid: int) -> List[int]:
    """Stack pointers of threads blocked in a system call, read without stopping anything."""
    sps: List[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return sps
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/syscall") as f:
                fields = f.read().split()
        except OSError:
            continue
        if len(fields) >= 9:
            sps.append(int(fields[7], 16))
    return sps


class _FarSmallReads:
    """The small reads of the layout (ELF magic, the link_map walk) of pages of files mapped from a FUSE
    or network mount, each made right after its page was found resident: made by a child process
    (core/far.py), so that a page reclaimed in between, fetched from a mount that never answers, is
    given up on (the read is a _bounded.blocking call) without keeping dumplib's process from exiting.
    The child starts at the first such read."""

    def __init__(self, pid: int, regions: Sequence[maps.Region], prober: Prober) -> None:
        self.pid, self._regions, self._prober = pid, regions, prober  # the prober's mounts: read once a step
        self._far_starts: Optional[Set[int]] = None  # found at the first question: most layouts ask none
        self._mem = -1
        self._reader: Any = None

    def __enter__(self) -> "_FarSmallReads":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._mem >= 0:
            os.close(self._mem)

    def holds(self, region: maps.Region) -> bool:
        if self._far_starts is None:
            self._far_starts = {r.start for r in self._prober.mounts.remote_regions(self._regions)
                                if "ht" not in r.vmflags}
        return region.start in self._far_starts

    def read(self, address: int, length: int) -> Optional[bytes]:
        """Up to *length* bytes at *address*, None if none (as MemoryReader)."""
        from .._bounded import blocking
        from .core.far import FarReader

        try:
            if self._reader is None:
                self._mem = os.open(f"/proc/{self.pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
                self._reader = FarReader(self._mem)
            buf = bytearray(length)
            got = blocking(self._reader.pread_into, memoryview(buf), address)
        except OSError:
            return None
        return bytes(buf[:got]) or None


def _anonymous_reader(pid: int, regions: Sequence[maps.Region],
                      read_memory: Optional[MemoryReader] = None) -> linkmap.Reader:
    """*read_memory* (by default a MemoryReader of *pid*'s), for private anonymous memory only: a thread
    pointer is the target's to set, and a read of a mapped file's page may wait on its filesystem."""
    reader = read_memory if read_memory is not None else MemoryReader(pid)
    anon = [r for r in regions if r.readable and not r.file_backed and not r.shared
            and r.path not in maps.SPECIAL_SKIP and "io" not in r.vmflags]
    starts = [r.start for r in anon]

    def read(address: int, length: int) -> Optional[bytes]:
        i = bisect.bisect_right(starts, address) - 1
        if i < 0 or address >= anon[i].end:
            return None
        return reader(address, min(length, anon[i].end - address))
    return read


def _exe_and_loader(pid: int, regions: Sequence[maps.Region], auxv: Dict[int, int]) -> List[str]:
    paths: List[str] = []
    try:
        paths.append(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        pass
    base = auxv.get(7)  # AT_BASE: where the dynamic loader is mapped
    for r in regions:
        if base and r.start == base and r.file_backed:
            paths.append(r.path)
    return paths
