"""The small interface every platform implements: a Platform opens a Session per target.

Layers (docs/architecture.md): the public functions (api, watching, postmortem) ask the switch
(_switch.py) for this OS's Platform once and pass it, or the Session and Host it gives, down to
the neutral modules below them (outputs, placement, space, retention, sidecar). Nothing here or
below imports a platform folder; the platform folders import this module and what lies under it.

Everything that belongs to one target (its pidfd or handle, what was checked) lives in the Session
opened for it, so two dumps of one process, from two threads, never share or release each other's
state. A Plan is frozen once made; what a write needs besides the plan comes as WriteOptions, and
what it learned comes back as its WriteReport.
"""
from __future__ import annotations

import abc
import os

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Any, Callable, ContextManager, Dict, List, Optional, Protocol, Sequence, Tuple, Union
else:
    from ._typing import Protocol

from ._record import record
from .errors import TargetRefused
from .kinds import DumpKind
from .results import DumpResult, ProcessInfo, SizeEstimate

if TYPE_CHECKING:  # names for annotations only: a one-shot dump imports none of them (start-up time)
    import subprocess

    import psutil

    from .triggers import Trigger

if TYPE_CHECKING:
    #: psutil's memory_info() of one process: a named tuple whose fields differ by OS (rss everywhere,
    #: shared on Linux, private and pagefile on Windows), which is why the Platform reads it.
    MemoryInfo = Any

    #: progress(bytes_written_so_far, seconds_elapsed); called from the writing thread or a monitor thread.
    ProgressCallback = Callable[[int, float], None]
    #: tick(bytes_written_so_far), called often during the write; it may raise to abandon the dump
    #: (the free-space watchdog and cancel_dumps do).
    Tick = Callable[[int], None]
    #: How a dump is written beside a target that keeps running: False, True or "auto" (see api.create_dump).
    SnapshotMode = Union[bool, str]
else:  # type aliases: at run time only their names, for the modules that import them (dumplib/_typing.py)
    MemoryInfo = ProgressCallback = Tick = SnapshotMode = object


class Sink(Protocol):
    """A sequential output the writer calls with each piece of the dump in file order (a compressor, a pipe)."""

    def __call__(self, data: Union[bytes, bytearray, memoryview]) -> object: ...


class HeldTarget(Protocol):
    """A process a platform's watcher already holds when it hands it to a dump (Linux: every thread
    stopped by the watcher's tracer at the process's exit; Windows: the debugger's process handle).
    Opaque to the neutral code: only the platform that made it reads it."""


@record(frozen=True)
class TargetEvent:
    """What a watcher caught the target doing when it asked for a dump: a signal about to be
    delivered, an exception, or the process's exit. Neutral facts, plus the platform's own record."""

    #: ``signal``, ``exception`` or ``exit``.
    kind: str
    #: The thread it happened on.
    tid: Optional[int] = None
    #: The signal number, the exception code, or (``exit``) the exit code; None for a death by signal.
    code: Optional[int] = None
    #: The faulting address, or where the exception was raised.
    address: Optional[int] = None
    #: Windows: whether the exception was first chance.
    first_chance: Optional[bool] = None
    #: ``exit`` by a signal: that signal's number.
    signal: Optional[int] = None
    #: The platform's record of it: Linux, the 128-byte siginfo_t; Windows, the exception information.
    raw: Any = None
    #: The process as the watcher holds it at the event, where the writer must read it in place.
    held: Optional[HeldTarget] = None

    @property
    def label(self) -> str:
        """The dump name's EXCEPTIONCODE: ``C0000005``, ``SIGSEGV``, ``EXIT3`` (a death by signal: its name)."""
        if self.kind == "exception":
            return f"{(self.code or 0) & 0xFFFFFFFF:08X}"
        if self.kind == "signal":
            return _signal_name(self.code)
        if self.signal:
            return _signal_name(self.signal)
        code = self.code or 0
        # Windows exit codes may be NTSTATUS values (a crash's C0000005): those read best in hex.
        return f"EXIT{code}" if 0 <= code < 1 << 16 else f"EXIT{code & 0xFFFFFFFF:08X}"


def _signal_name(number: Optional[int]) -> str:
    import signal as _signal

    try:
        return _signal.Signals(number or 0).name
    except ValueError:
        return f"SIG{number}"


@record(frozen=True)
class Firing:
    """A trigger that held (or an event that arrived) for one process."""

    trigger: Trigger
    value: Optional[float]
    #: Free text about the event (signal name and sender, exception code and address).
    detail: Optional[str] = None
    #: What the event source caught (signal, exception, exit): it goes to the dump's WriteOptions.
    event: Optional[TargetEvent] = None


@record(frozen=True)
class Plan:
    """What the writer will write, decided before anything is written or the target is touched."""

    target: ProcessInfo
    kind: DumpKind
    #: The raw mask in force (MINIDUMP_TYPE, or coredump_filter bits on Linux; None: kind rules).
    flags: Optional[int]
    #: The platform's own part of the plan (Linux: the selected segments).
    detail: object = None
    #: What the writer will write, by the same rules: what the free-space guard compares.
    estimate: Optional[SizeEstimate] = None
    #: What the caller should be told about this plan.
    warnings: Tuple[str, ...] = ()


@record(frozen=True)
class WriteOptions:
    """How to write a plan: everything the write needs that is not what to write."""

    #: The user's text (or None).
    comment: Optional[str]
    #: dumplib's own record (JSON: tool, version, kind, flags), stored apart from the comment so no
    #: comment can pass for it.
    signature: str
    #: Called as the dump grows; may raise to abandon it.
    tick: Optional[Tick] = None
    #: Seconds the writer may keep the target stopped before it lets it go and abandons the dump.
    max_pause: Optional[float] = None
    #: Write from a copy-on-write snapshot: False, True (refuse with TargetRefused reason
    #: ``snapshot-unavailable`` where none can be taken) or ``"auto"`` (fall back, with a warning).
    snapshot: SnapshotMode = False
    #: The signal, exception or exit a watcher took this dump at (None: an ordinary dump).
    event: Optional[TargetEvent] = None
    #: Called once the target runs again, as soon as its stop is over, whatever the write still has to
    #: do then (from a snapshot, or memory it staged): the sidecar's hasher starts there. Writers that
    #: never call it leave that to the end of the write.
    released: Optional[Callable[[], None]] = None


@record(frozen=True)
class WriteReport:
    """What a write learned, for verification, the result and the sidecar."""

    stopped_seconds: Optional[float] = None
    warnings: Tuple[str, ...] = ()
    #: The raw mask the dump was really written with (a retry may drop flags the OS lacks).
    flags: Optional[int] = None
    #: The platform's own facts its verify needs (Linux: the core's head and thread count).
    facts: object = None
    #: Whether the memory was read from a snapshot (the target ran on during the write).
    snapshot: bool = False
    #: Memory the snapshot cost the system while it lived (copy-on-write pages or reserved commit),
    #: in bytes, where the platform can tell.
    snapshot_bytes: Optional[int] = None


class Session(abc.ABC):
    """One target, held from Platform.open to close: its pidfd or handle and what was checked.

    A context manager; close() lets go of what it holds and is called exactly once."""

    def __init__(self, target: ProcessInfo, listing: bool = False) -> None:
        self.target = target
        #: Opened for a listing, without the refusals: it may plan, never write.
        self.listing = listing

    def _writable(self) -> None:
        """DumpFailed for a write through a session opened for a listing (a dumplib bug, said as one)."""
        if self.listing:
            from .errors import DumpFailed

            raise DumpFailed(f"the session on process {self.target.pid} was opened for a listing, without the"
                             " checks a dump needs; nothing was written (a dumplib bug)", pid=self.target.pid)

    @abc.abstractmethod
    def plan(self, kind: DumpKind, flags: Optional[int]) -> Plan:
        """Decide what will be written. Read-only: never stops or suspends the target."""

    @abc.abstractmethod
    def write(self, plan: Plan, temp_path: str, options: WriteOptions) -> WriteReport:
        """Create *temp_path* exclusively (owner-only) and write the dump into it."""

    def write_stream(self, plan: Plan, sink: Sink, options: WriteOptions, *, local: bool = False) -> WriteReport:
        """Write the dump in file order through *sink* (only where Platform.streams is true). *local*: the
        sink is a local file or pipe that is done with each buffer when its call returns; the writer may
        then hold the dump in memory while the target is stopped and send it once it runs (Linux:
        core/staged.py). An upload's sink is not: its memory is bounded."""
        raise NotImplementedError("this platform needs a seekable file")

    @abc.abstractmethod
    def verify(self, path: str, plan: Plan, report: WriteReport) -> Tuple[str, ...]:
        """Read the written file back; raise DumpFailed unless it holds what the plan promised.
        Returns what the caller should be told about it."""

    def verify_stream(self, plan: Plan, report: WriteReport, size: int) -> None:
        """Check a dump sent through write_stream (which cannot be read back) from what the writer kept."""
        raise NotImplementedError("this platform does not stream")

    def close(self) -> None:
        """Let go of what this session holds on its target."""

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Host(abc.ABC):
    """What dumplib's own files, directories and helper threads need from the OS it runs on.

    Not the target's business: where the platform differs in how a file is created, placed or
    measured, a directory held or a thread's priority set, the neutral modules (placement,
    outputs, space, retention, _hashing) ask this, and each platform answers in its own room
    (_linux/host.py, _windows/host.py)."""

    #: Whether stat names file owners and real modes (not on Windows, where the DACL protects a file).
    owners_known: bool = True

    @abc.abstractmethod
    def mine(self, st: os.stat_result, path: Optional[str] = None) -> bool:
        """Whether the file *st* describes (the lstat of *path*) belongs to this user: by stat's owner
        (Linux), or by the owner read from a handle on *path* that is the file *st* describes (Windows,
        where stat names no owner)."""

    @abc.abstractmethod
    def open_private(self, path: str) -> int:
        """Create *path* exclusively, readable by its owner only, and return an OS file descriptor for writing."""

    def scratch_usable(self, directory: str) -> bool:
        """Whether *directory* may hold a raw scratch copy of a dump (private, and able to hold it)."""
        return True

    @abc.abstractmethod
    def read_only(self, directory: str) -> bool:
        """Whether *directory*'s file system is mounted read-only (False where that cannot be told)."""

    def name_max(self, directory: str) -> Optional[int]:
        """The longest file name, in bytes, *directory*'s file system allows (None where that cannot be told:
        a name too long is then found when the file is created)."""
        return None

    @abc.abstractmethod
    def check_trusted(self, directory: str, template: str, fixed: Optional[str], final: str) -> None:
        """Raise InvalidDumpPath if another user could have steered the dump into *directory* or could
        tamper with it there; *fixed* is the directory the path *template* names before its first token,
        which the dump must not leave."""

    @abc.abstractmethod
    def place_new(self, temp: str, final: str) -> None:
        """Give the file *temp* the name *final*, never replacing what is there (FileExistsError)."""

    def temp_in_use(self, path: str, st: os.stat_result) -> Optional[bool]:
        """Whether a live dumplib still writes our temporary *path* (*st*, from lstat): True, False, or
        None where that cannot be told (then only the directory's hold and the temporary's age say)."""
        return None

    def reader_gone(self, fd: int) -> bool:
        """Whether *fd* is a pipe whose reading end is closed (`| head -c 0` that has already exited),
        so that a dump to it is refused before the target is stopped; False where that cannot be told
        (the first write says it then)."""
        return False

    def release_gone(self) -> None:
        """Let go of what this process still holds on temporaries no longer at their names (Linux: their
        flocks): called once a temporary given up on is removed late (its file system answered again)."""

    def forget(self, path: str) -> None:
        """This process has just removed or placed its temporary *path*: let go of what it holds on it
        (Linux: its flock's descriptor) now, if the name no longer holds it, rather than at a later look
        (which takes a thread, and a pids limit may refuse one: the descriptor stayed open)."""

    @abc.abstractmethod
    def hold(self, directory: str, clean: Callable[[bool], List[str]]) -> ContextManager[List[str]]:
        """Hold *directory* while dumplib's temporaries live there, so no other dumplib takes them for dead.

        *clean(locked)* removes stale temporaries and says what it removed; it is called with True
        when no live dumplib holds the directory, or with False where directories cannot be held
        (then only temporaries too old to be alive may go). Yields what the caller should be told."""

    @abc.abstractmethod
    def appending(self, fd: int) -> bool:
        """Whether writes to *fd* go to the end of the file whatever its position (O_APPEND)."""

    @abc.abstractmethod
    def make_owner_only(self, fd: int) -> bool:
        """Make the open file *fd* readable by its owner only; False where a mode cannot do that."""

    @abc.abstractmethod
    def binary(self, fd: int) -> None:
        """Make *fd* pass bytes through unchanged (no newline translation)."""

    @abc.abstractmethod
    def disk_bytes(self, st: os.stat_result) -> Optional[int]:
        """Bytes the file *st* describes takes on disk (None where stat does not say)."""

    @abc.abstractmethod
    def usage(self, volume: Union[str, int]) -> Tuple[int, int]:
        """(size, free bytes for an unprivileged writer) of the volume holding a directory or an open file."""

    # A secret of this user's (the store retention key, _egress/signing.py), judged on the file opened,
    # beyond what stat says (Windows: stat names no owner and no real mode; the DACL decides).
    def open_secret(self, path: str) -> int:
        """Open the existing file *path* for reading, never through a symbolic link (O_NOFOLLOW: an
        OSError; Windows opens a reparse point itself, which secret_problem then refuses)."""
        return os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))

    def secret_problem(self, fd: int) -> Optional[str]:
        """Why the file open as *fd* may not hold this user's secret, beyond stat's owner and mode
        (None: nothing more to say). Said as the end of "the file ...": "belongs to another user"."""
        return None

    def private_directory_problem(self, path: str) -> Optional[str]:
        """Why the directory *path* may not hold this user's secret, beyond stat's owner and mode (None:
        nothing more to say)."""
        return None


class EventSource(Protocol):
    """A debugger attached to one process, answering event triggers (signals, exceptions).

    While attached it may be the process's one tracer, so every dump of that process, for an
    event or a sampled trigger, goes through ``dump_now``, which hands the process over to
    ``create_dump`` where the platform needs it and takes it back.
    """

    def start(self) -> None: ...

    def dump_now(self, take: Callable[[], DumpResult]) -> DumpResult: ...

    def stop(self) -> None:
        """Detach, leaving the process running as it was; bounded."""

    @property
    def ended(self) -> bool: ...


if TYPE_CHECKING:
    #: Called by an event source from its own thread with a firing and *hand_over*: the watcher decides
    #: whether to dump and, if so, calls ``hand_over(create)``, which runs *create* with the process
    #: handed to it and takes the process back.
    HandOver = Callable[[Callable[[], DumpResult]], DumpResult]
    FireCallback = Callable[[int, Firing, HandOver], None]
else:
    HandOver = FireCallback = object


class WatchSupport(Protocol):
    """What watching needs from one platform (Platform.watch_events()): a debugger per process for
    the event triggers, a way to start a command held before its first instruction so that debugger
    sees it all, and CPU figures where psutil's are wrong."""

    def source(self, pid: int, triggers: Sequence[Trigger], fire: FireCallback) -> EventSource:
        """The event source for *pid*; InvalidArgument for a trigger this platform cannot serve."""

    def launch_held(self, argv: List[str]) -> "subprocess.Popen[bytes]":
        """Start *argv* held before its first instruction (or as it is, where the platform cannot)."""

    def let_run(self, proc: "subprocess.Popen[bytes]") -> None:
        """Let a command from launch_held run, once its source is attached."""

    def cpu_seconds(self, pid: int) -> Optional[float]:
        """User + system CPU seconds of *pid* where psutil's figure is wrong (Wine's GetProcessTimes
        never advances); None: use psutil's."""


class Platform(abc.ABC):
    """One operating system's way of finding, judging and dumping processes."""

    #: Name reported in DumpResult.backend.
    name: str = ""
    #: Default dump-file extension, with the dot.
    extension: str = ""
    #: Whether process names compare case-insensitively and without ``.exe`` (Windows' rule).
    names_fold_case: bool = False
    #: Whether the writer can produce the dump strictly in file order (Session.write_stream): then
    #: it can go straight through a compressor or to a pipe. Otherwise it needs a seekable file.
    streams: bool = False
    #: A watcher's dumps default to this snapshot mode (see WriteOptions.snapshot).
    watch_snapshot: SnapshotMode = False
    #: Whether reading a process's command line can wait for good on that process's memory-map lock
    #: (Linux's procfs: a page fault stuck on a stalled FUSE or NFS mount holds it): `ps` then probes
    #: each process briefly before reading its row (targets.PROBE_SECONDS).
    command_line_can_hang: bool = False

    @abc.abstractmethod
    def normalise_flags(self, kind: DumpKind, flags: Optional[int]) -> Optional[int]:
        """Validate a raw *flags* mask (InvalidKind) and return the mask in force for *kind*."""

    @abc.abstractmethod
    def process_table(self) -> Dict[int, str]:
        """Every visible process as pid -> name, from one snapshot."""

    def name_of(self, pid: int, exact: bool = True) -> Optional[str]:
        """The name of process *pid* as process_table would give it (None: no such process). Not *exact*:
        a label, which may be cut short where the whole name cannot be read now (Linux, a pids limit)."""
        return self.process_table().get(pid)

    @abc.abstractmethod
    def pid_exists(self, pid: int) -> bool:
        """Whether *pid* is a process now (a thread's id is not)."""

    @abc.abstractmethod
    def started(self, pid: int) -> Optional[float]:
        """When process *pid* started, seconds since the epoch (None: gone or hidden)."""

    @abc.abstractmethod
    def command_line(self, pid: int) -> Optional[List[str]]:
        """Process *pid*'s command line, as OS text (None: gone or hidden)."""

    def host_name(self) -> str:
        """This machine's name, for the sidecar."""
        import socket

        return socket.gethostname()

    def sidecar_facts(self, pid: int) -> Dict[str, Any]:
        """More facts for the sidecar of a dump of *pid* (a postmortem handler's signal and executable)."""
        return {}

    def service_pid(self, name: str) -> int:
        """The running service *name*'s process id (``svc:NAME`` targets), where the OS has services."""
        from .errors import ProcessNotFound

        raise ProcessNotFound(f"svc:{name}", "svc:NAME names a Windows service; here give a pid or a process name")

    @abc.abstractmethod
    def open(self, target: ProcessInfo, *, for_dump: bool = False, listing: bool = False) -> Session:
        """Refuse targets that cannot be dumped safely (self, bitness, zombies...) with a typed error,
        else open a Session holding *target* until it is closed; *for_dump* says a write will follow,
        so the session may open with the access a dump needs. *listing* (``dumplib ps``: a size for
        every process, traced ones and this one too) skips the refusals; such a session plans only."""

    @abc.abstractmethod
    def host(self) -> Host:
        """This platform's way with dumplib's own files, directories and helper threads."""

    @abc.abstractmethod
    def open_handles(self, proc: "psutil.Process") -> int:
        """How many handles (Windows) or file descriptors (Linux) the psutil Process *proc* holds."""

    @abc.abstractmethod
    def private_bytes(self, mem: MemoryInfo) -> Optional[int]:
        """`dumplib ps`'s private figure from psutil's memory_info() *mem*: cheap, one per process."""

    @abc.abstractmethod
    def watched_memory(self, mem: MemoryInfo) -> int:
        """What MemoryAbove/MemoryBelow measure by default, from psutil's memory_info() *mem*."""

    def watch_events(self) -> Optional[WatchSupport]:
        """What watching needs from this platform, imported only when asked (None: nothing)."""
        return None


def without_snapshot(pid: int, mode: SnapshotMode, why: str) -> Tuple[str, ...]:
    """A platform that cannot snapshot process *pid*: refuse (*mode* True) or say why in a warning ("auto").

    Called before anything is written, so a refusal leaves nothing behind and never stops the target."""
    if mode is True:
        raise TargetRefused(f"no snapshot of process {pid} can be taken: {why}; nothing was written."
                            " Dump it without a snapshot (the target is then stopped for the whole write), or"
                            ' pass snapshot="auto" (--snapshot=auto) to fall back to that by itself',
                            pid=pid, reason="snapshot-unavailable")
    if mode == "auto":
        return (f"no snapshot was taken ({why}): the target was stopped for the whole write",)
    return ()

