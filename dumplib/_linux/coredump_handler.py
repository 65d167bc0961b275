"""The core_pattern pipe handler: the kernel starts it at every crash with the core on stdin.

It runs as root in the initial namespaces while the crashed process waits in the kernel, so it is
short and bounded (a watchdog alarm ends it whatever it waits for), and it treats the crashed process
as hostile: its pid is proven by the pidfd the kernel hands over (%F) or, without one, by the process
still being in its core dump; its name, argv and memory are bytes; nothing it can name is opened.

The dump itself goes through dumplib's one pipeline (api._create) with a backend whose "capture" is
the kernel's stream: the guard (reserve, --fit), naming, compression, sidecar and retention are the
ones every dump gets.
"""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import datetime
import fcntl
import hashlib
import json
import os
import resource
import select
import signal
import stat
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

from .. import api
from .._platform import MemoryInfo, Plan, Platform, Session, Sink, TargetEvent, WriteOptions, WriteReport

if TYPE_CHECKING:
    import psutil
from ..errors import DumpError, DumpFailed, InsufficientDiskSpace, InvalidDumpFile
from ..formats import elfcore
from ..kinds import DumpKind
from ..results import DumpResult, ProcessInfo, SizeEstimate
from ..space import SpaceGuard, human
from ..formats import linkmap
from .core import notes, selection
from .core import stream as corestream
from .proc import maps
from .host import LinuxHost, create_exclusive, write_new_file

CONFIG = "config.json"
LOG = "postmortem.log"
RATE = "rate.json"
#: The arguments the kernel gives the handler, each tagged so a specifier the kernel lacks (it drops
#: unknown ones, e.g. %F before 6.16) leaves an empty value instead of shifting the others.
SPECIFIERS = {"F": "%F", "P": "%P", "p": "%p", "i": "%i", "s": "%s", "d": "%d", "t": "%t"}
#: Bytes read from the crashed process's small /proc files at most (they are its own choice).
_SMALL = 1 << 16
_SMAPS_MAX = 256 << 20
#: Free space is looked at after every this many bytes of output (the output volume may be small).
SPACE_EVERY = 1 << 20
#: Distinct executables one user may have dumped per rate window (a copy of an executable is a new path).
USER_EXES = 16
#: Dumps in the rate book at most (all users): the book stays far under read_private_json's 1 MiB.
BOOK_MAX = 4096
#: The log is rotated to LOG.1 past this size: a crash loop must not fill root's volume.
LOG_MAX = 16 << 20

T = TypeVar("T")


class Refused(Exception):
    """A crash the handler decided not to dump: *what* is the log's word for it."""

    def __init__(self, what: str, why: str) -> None:
        super().__init__(why)
        self.what, self.why = what, why


# -- identity: the crashed process, proven ----------------------------------------------------------


class Crashed:
    """The crashed process's facts, read once while the kernel holds it, as bytes."""

    def __init__(self, pid: int, nspid: int, tid: int, pidfd: int, dumpable: int, when: int) -> None:
        self.pid, self.nspid, self.tid, self.pidfd, self.dumpable, self.when = pid, nspid, tid, pidfd, dumpable, when
        self.status = _proc(pid, "status", _SMALL)
        self.comm = _proc(pid, "comm", 64).rstrip(b"\n")
        self.auxv = _proc(pid, "auxv", _SMALL)
        try:
            self.exe: bytes = os.readlink(f"/proc/{pid}/exe".encode())  # a name only: never opened
        except OSError:
            self.exe = b""
        #: Whether its mmap lock held a read past MM_LOCK_SECONDS (then regions and cmdline are empty).
        self.maps_locked = False
        # cmdline and smaps take the crashed process's mmap lock, which something else may hold for
        # good (a read of its pages stuck on a hung FUSE or NFS mount, with a writer queued: a process
        # sharing its memory survives the crash). Each read is bounded; without the bound the handler
        # slept there until its alarm killed it, with nothing logged.
        try:
            self.cmdline = _bounded_read(pid, lambda: _proc(pid, "cmdline", _SMALL, blocking=True))
            self.regions = _bounded_read(pid, lambda: _smaps_regions(pid))
        except TimeoutError:
            self.maps_locked = True
            self.cmdline, self.regions = b"", []

    def field(self, name: bytes) -> bytes:
        for line in self.status.splitlines():
            if line.startswith(name + b":"):
                return line.split(b":", 1)[1].strip()
        return b""

    @property
    def uid(self) -> Optional[int]:
        try:
            return int(self.field(b"Uid").split()[0])
        except (IndexError, ValueError):
            return None

    @property
    def name(self) -> str:
        return self.comm.decode("utf-8", "surrogateescape") or "process"

    @property
    def argv(self) -> List[str]:
        return [w.decode("utf-8", "surrogateescape") for w in self.cmdline.rstrip(b"\0").split(b"\0")] if self.cmdline else []


def locked_message(pid: int) -> str:
    from .backend import MM_LOCK_SECONDS

    return (f"the memory map of process {pid} is locked: a read of its command line or smaps got no answer within"
            f" {MM_LOCK_SECONDS:g} s (something holds its mmap lock, e.g. another process's read of its pages stuck"
            " on a hung FUSE or NFS mount, with a process sharing its memory queued behind it; or, rarely, a read of"
            " its pages back from a swap device slower than that); the kernel's own core waits behind the same"
            " lock, so nothing was dumped; the crashed process ends once that lock comes free")


def _bounded_read(pid: int, fn: Callable[[], T]) -> T:
    """fn(), whose blocking() reads take the crashed process's mmap lock: each given up on after
    MM_LOCK_SECONDS (TimeoutError). Its worker, if abandoned, waits killably and dies with the handler."""
    from .._bounded import call_within
    from .backend import MM_LOCK_SECONDS
    from .proc.pidfiles import mm_key

    return call_within(fn, MM_LOCK_SECONDS, mm_key(pid), each=True)


def _proc(pid: int, name: str, limit: int, blocking: bool = False) -> bytes:
    """Up to *limit* bytes of /proc/PID/NAME, b"" if unreadable. *blocking*: a file whose reads take
    the process's mmap lock, each read made through _bounded.blocking (run it under _bounded_read)."""
    from .._bounded import blocking as bounded

    read = bounded if blocking else (lambda fn, *args: fn(*args))
    try:
        fd = os.open(f"/proc/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return b""
    try:
        parts, left = [], limit
        while left > 0:
            block = read(os.read, fd, min(left, 1 << 20))
            if not block:
                break
            parts.append(block)
            left -= len(block)
        return b"".join(parts)
    except OSError:
        return b""
    finally:
        os.close(fd)


def _smaps_regions(pid: int) -> List[maps.Region]:
    """The crashed process's smaps parsed a mapping at a time as it is read: its size is the crasher's
    choice (60 000 mappings of a file with a 4 KB path are 270 MB), so the text is never held whole and
    each path is kept once however many mappings name it. Each read() takes its mmap lock: run it
    under _bounded_read."""
    from .._bounded import blocking

    try:
        fd = os.open(f"/proc/{pid}/smaps", os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return []
    regions: List[maps.Region] = []
    paths: Dict[str, str] = {}
    pending, total = b"", 0

    def parse(text: bytes) -> None:
        for r in maps.parse_smaps(text.decode("utf-8", "surrogateescape")):
            r.path = paths.setdefault(r.path, r.path)
            regions.append(r)

    try:
        while total < _SMAPS_MAX:
            block = blocking(os.read, fd, 1 << 20)
            if not block:
                break
            total += len(block)
            pending += block
            cut = pending.rfind(b"\nVmFlags:")  # each mapping's last line (kernels without it: parsed at the end)
            end = pending.find(b"\n", cut + 1) if cut >= 0 else -1
            if end >= 0:
                parse(pending[:end + 1])
                pending = pending[end + 1:]
        if pending:
            parse(pending)
    except OSError:
        return []
    finally:
        os.close(fd)
    return regions


def _pidfd_pid(fd: int) -> Optional[int]:
    """The pid (in our namespace) the pidfd *fd* refers to, from /proc/self/fdinfo."""
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as f:
            for line in f.read(4096).splitlines():
                if line.startswith(b"Pid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _exited(pidfd: int) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def identify(args: Dict[str, str]) -> Crashed:
    """The crashed process the kernel called us for, proven; Refused('identity') otherwise.

    With %F the kernel's own pidfd names it. Without, a pidfd is opened on %P and the process must be
    in its core dump (status CoreDumping: 1), have started before the crash (%t) and hold thread %i: a
    recycled pid (the crashed process killed meanwhile) is none of these. Either way the facts are read
    first and the pidfd checked after, so they are the crashed process's."""
    try:
        pid, nspid, tid = int(args["P"]), int(args.get("p") or args["P"]), int(args.get("i") or args["P"])
        dumpable, when = int(args.get("d") or 1), int(args.get("t") or 0)
    except (KeyError, ValueError):
        raise Refused("identity", "the kernel's arguments are missing or malformed") from None
    given = args.get("F", "")
    if given:
        pidfd = int(given) if given.isdigit() else -1
        if pidfd < 0 or _pidfd_pid(pidfd) != pid:
            raise Refused("identity", f"the pidfd the kernel gave ({given!r}) does not name process {pid}")
    else:
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            raise Refused("identity", f"process {pid} is gone before the handler could hold it") from None
    crashed = Crashed(pid, nspid, tid, pidfd, dumpable, when)
    if crashed.field(b"CoreDumping") != b"1":
        raise Refused("identity", f"process {pid} is not dumping core: its pid was reused, nothing was dumped")
    if not given:
        from .proc.pidfiles import started

        began = started(pid)
        if began is None or (when and began > when + 1) or not os.path.isdir(f"/proc/{pid}/task/{tid}"):
            raise Refused("identity", f"process {pid} started after the crash or lacks the crashing thread {tid}:"
                                      " its pid was reused, nothing was dumped")
    if _exited(pidfd) or crashed.field(b"Tgid") != str(pid).encode():
        raise Refused("identity", f"process {pid} went away while it was read; nothing was dumped")
    return crashed


# -- the backend whose capture is the kernel's stream ------------------------------------------------


class StreamCore(Platform, Session):
    """The platform and the one session the pipeline gets in the handler: plans are the kernel's core
    filtered to a kind, written from stdin; the crashed process is never opened again."""

    name = "linux-elfcore"
    extension = ".core"
    streams = True

    def __init__(self, crashed: Crashed, pipe: corestream.Pipe, head: corestream.CoreHead, started: float,
                 min_free: Optional[int]) -> None:
        Session.__init__(self, ProcessInfo(pid=crashed.pid, name=crashed.name))
        self.crashed, self.pipe, self.head, self.handler_started, self.min_free = crashed, pipe, head, started, min_free
        self.regions = crashed.regions
        self.released_after: Optional[float] = None
        self.kernel_bytes = 0

    # What the pipeline asks of any platform.
    def normalise_flags(self, kind: DumpKind, flags: Optional[int]) -> Optional[int]:
        return None

    def process_table(self) -> Dict[int, str]:
        return {self.crashed.pid: self.crashed.name}

    def command_line(self, pid: int) -> Optional[List[str]]:
        return self.crashed.argv

    def pid_exists(self, pid: int) -> bool:
        return pid == self.crashed.pid  # the one process this platform knows; the kernel keeps it until we end

    def started(self, pid: int) -> Optional[float]:
        return None  # never asked: the crashed process is not resolved again

    def host_name(self) -> str:
        return os.uname().nodename

    def open(self, target: ProcessInfo, *, for_dump: bool = False, listing: bool = False) -> "StreamCore":
        return self

    def host(self) -> LinuxHost:
        return _HOST

    # Never asked: the handler lists and watches nothing.
    def open_handles(self, proc: "psutil.Process") -> int:
        return 0

    def private_bytes(self, mem: MemoryInfo) -> Optional[int]:
        return None

    def watched_memory(self, mem: MemoryInfo) -> int:
        return 0

    def sidecar_facts(self, pid: int) -> Dict[str, Any]:
        signo, code, address = self.head.signal
        return {"postmortem": {
            "signal": signo, "signal_name": _signal_name(signo), "si_code": code,
            "address": None if address is None else f"0x{address:x}",
            "crashing_thread": self.head.threads[0][0] if self.head.threads else None,
            "exe": self.crashed.exe.decode("utf-8", "surrogateescape"),
            "uid": self.crashed.uid, "dumpable": self.crashed.dumpable,
            "kernel_core_bytes": self.kernel_bytes or None,
            "released_after_seconds": self.released_after,
        }}

    def plan(self, kind: DumpKind, flags: Optional[int]) -> Plan:
        target = self.target
        kept = None if kind is DumpKind.FULL else self._kept(kind)
        signature = api.signature_text(kind, None).encode()
        core = corestream.filtered(self.head, kept, notes.note(b"DUMPLIB", elfcore.NT_DUMPLIB_SIGNATURE, signature))
        memory = sum(ld[3] for ld in core.loads)
        estimate = SizeEstimate(pid=target.pid, kind=kind.value, flags=None, bytes=core.size,
                                breakdown={"memory": memory, "metadata": core.size - memory})
        return Plan(target=target, kind=kind, flags=None, detail=core, estimate=estimate)

    def _kept(self, kind: DumpKind) -> List[Tuple[int, int]]:
        """The [start, end) ranges *kind* keeps, by the rules a live dump of this kind follows."""
        from .backend import _exe_and_loader
        from .core.memory import MemoryReader

        if not self.regions:
            raise DumpFailed(f"the maps of process {self.crashed.pid} could not be read, so only a full core"
                             " can be written", pid=self.crashed.pid, reason="maps-unreadable")
        auxv = linkmap.parse_auxv(self.crashed.auxv)
        # The link_map walk reads its memory through /proc/PID/mem, bounded like the reads above:
        # process_vm_readv would wait for a stuck mmap lock unkillably, and the handler's alarm with it.
        # Each read is bounded, and so is the walk: a crasher can lay thousands of link_map nodes across
        # pages of its own FUSE file, each answered just inside the bound.
        from .backend import MM_LOCK_SECONDS

        deadline = time.monotonic() + MM_LOCK_SECONDS
        try:
            with MemoryReader(self.crashed.pid) as reader:
                def read(address: int, length: int) -> Optional[bytes]:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the link_map walk took over {MM_LOCK_SECONDS:g} s")
                    return reader(address, length)

                keep = _bounded_read(self.crashed.pid, lambda: linkmap.linkmap_addresses(auxv, read))
        except (OSError, ValueError):
            keep = []
        segments = selection.select(self.regions, kind, filter_bits=None,
                               stack_pointers=[sp for _tid, sp in self.head.threads], keep_pages=keep,
                               exe_paths=_exe_and_loader(self.crashed.pid, self.regions, auxv),
                               elf_headers=selection.elf_header_starts(self.regions, None))
        ranges: List[Tuple[int, int]] = []
        for s in segments:
            if s.dump_start != s.start:
                continue
            if ranges and ranges[-1][1] == s.start:
                ranges[-1] = (ranges[-1][0], s.end)
            else:
                ranges.append((s.start, s.end))
        return ranges

    def write(self, plan: Plan, temp_path: str, options: WriteOptions) -> WriteReport:
        fd = create_exclusive(temp_path)
        if options.released is not None:
            options.released()  # no process of ours is stopped here: the sidecar's hash may follow at once
        try:
            def out(data: Any) -> None:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            return self.write_stream(plan, out, options)
        finally:
            os.close(fd)

    def write_stream(self, plan: Plan, sink: Sink, options: WriteOptions, *, local: bool = False) -> WriteReport:
        # *local* changes nothing here: the kernel's core comes from a pipe, read once, in order.
        core = plan.detail
        assert isinstance(core, corestream.Filtered)
        tick = options.tick
        checked = [0]

        def watched(written: int) -> None:
            # Every MiB, whatever the pipeline's own watchdog does: the volume may be smaller than its step.
            if written - checked[0] >= SPACE_EVERY:
                checked[0] = written
                self._check_space(written)
            if tick is not None:
                tick(written)

        try:
            corestream.copy_filtered(self.pipe, core, sink, watched)
        except OSError as exc:
            from .backend import _write_error

            raise _write_error(exc, self.where or "the store", self.crashed.pid) from None
        self.kernel_bytes = self.pipe.position + self.pipe.drain()
        self.release_pipe()
        return WriteReport(stopped_seconds=None, flags=None, facts=(len(self.head.threads), core.head))

    #: The directory the dump goes to (set by the handler before the pipeline runs); None for a URL.
    where: Optional[str] = "/"

    def release_pipe(self) -> None:
        """Close our end of the pipe: the kernel lets the crashed process go (core_pipe_limit > 0 waits for it)."""
        if self.released_after is None:
            try:
                os.close(self.pipe.fd)
            except OSError:
                pass
            self.released_after = round(time.monotonic() - self.handler_started, 3)

    def _check_space(self, written: int) -> None:
        """InsufficientDiskSpace once the dump's volume is below its reserve (the pipeline then removes it)."""
        if self.where is None:
            return  # streamed to a store: no local volume fills
        guard = SpaceGuard(self.where, _HOST, self.min_free)
        free = guard.free()
        if free < guard.reserve:
            raise InsufficientDiskSpace(
                f"free space on the volume of {self.where} fell to {human(free)}, below the"
                f" {human(guard.reserve)} reserve, while the core was written; it was abandoned",
                path=self.where, needed=written, free=free, reserve=guard.reserve)

    def verify(self, path: str, plan: Plan, report: WriteReport) -> Tuple[str, ...]:
        self._check_space(os.stat(path).st_size)
        try:
            core = elfcore.read_elfcore(path)
        except InvalidDumpFile as exc:
            raise DumpFailed(f"the written core is unusable and was removed: {exc.message}",
                             pid=self.crashed.pid) from None
        self._check(core, report)
        return ()

    def verify_stream(self, plan: Plan, report: WriteReport, size: int) -> None:
        # Called once the compressor's last (buffered) output is on disk: the last word on the reserve.
        self._check_space(size)
        try:
            core = elfcore.parse_head(self._facts(report)[1], size, "the output stream")
        except InvalidDumpFile as exc:
            raise DumpFailed(f"the core is unusable: {exc.message}", pid=self.crashed.pid) from None
        self._check(core, report)

    def _check(self, core: elfcore.ElfCore, report: WriteReport) -> None:
        from .backend import check_core

        check_core(core, self.crashed.nspid, self._facts(report)[0])

    @staticmethod
    def _facts(report: WriteReport) -> Tuple[int, bytes]:
        facts = report.facts
        assert isinstance(facts, tuple), "a report from another writer"
        return facts


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


_HOST = LinuxHost()


# -- configuration, rate limit, log ------------------------------------------------------------------


def read_private_json(path: str) -> Optional[Dict[str, Any]]:
    """A JSON object from a regular root-owned file no one else can write (None: absent or not trusted)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            return None
        data = json.loads(os.read(fd, 1 << 20) or b"null")
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    return data if isinstance(data, dict) else None


def write_private_json(path: str, data: Dict[str, Any]) -> None:
    """Replace *path* with *data*: a new owner-only file (exclusive, no symlink) renamed over it."""
    write_new_file(path, json.dumps(data, indent=1).encode(), 0o600, replace=True)


def _locked(state_dir: str, patience: float = 2.0) -> int:
    fd = os.open(os.path.join(state_dir, "rate.lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise Refused("rate-limited", "the rate-limit book is held by another handler too long") from None
            time.sleep(0.02)


def take_rate_slot(state_dir: str, exe: bytes, max_per: Optional[Sequence[int]], now: float,
                   uid: Optional[int] = None, max_exes: Optional[int] = USER_EXES) -> None:
    """Count this crash against its executable's budget (at most N per M minutes); Refused if spent.

    The path is the crasher's choice (a copy is a new path), so a user also gets at most *max_exes*
    executables in the window, and the book at most BOOK_MAX dumps: it stays small and readable."""
    if not max_per:
        return
    minutes, most = int(max_per[0]), int(max_per[1])
    user = f"{'?' if uid is None else uid}:"
    key = user + hashlib.sha256(exe).hexdigest()[:32]  # only the path's hash is kept
    fd = _locked(state_dir)
    try:
        path = os.path.join(state_dir, RATE)
        book = read_private_json(path) or {}
        window = now - minutes * 60
        book = {k: [t for t in v if isinstance(t, (int, float)) and t > window]
                for k, v in book.items() if isinstance(v, list)}
        book = {k: v for k, v in book.items() if v}
        if key not in book:
            exes = sum(1 for k in book if k.startswith(user))
            if max_exes is not None and exes >= max_exes:
                write_private_json(path, book)
                raise Refused("rate-limited", f"{exes} executables of user {uid} dumped in the last {minutes}"
                                              f" minutes (--max-exes-per-user {max_exes})")
            if sum(len(v) for v in book.values()) >= BOOK_MAX:
                write_private_json(path, book)
                raise Refused("rate-limited", f"{BOOK_MAX} dumps in the last {minutes} minutes on this machine")
        times = book.setdefault(key, [])
        if len(times) >= most:
            write_private_json(path, book)
            raise Refused("rate-limited", f"{len(times)} dumps of this executable in the last {minutes} minutes"
                                          f" (--max-per {minutes}:{most})")
        times.append(now)
        write_private_json(path, book)
    finally:
        os.close(fd)


def log_line(state_dir: str, record: Dict[str, Any]) -> None:
    """One line per crash: JSON in the state directory's log, and a readable line to syslog (the journal)."""
    line = json.dumps(record, ensure_ascii=True)
    path = os.path.join(state_dir, LOG)
    try:
        for _ in range(3):
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # bounded by the handler's alarm
                st = os.fstat(fd)
                if os.stat(path).st_ino != st.st_ino:
                    continue  # rotated by another handler while we waited: write to the new one
                if st.st_size < LOG_MAX:
                    os.write(fd, line.encode() + b"\n")
                    break
                os.rename(path, path + ".1")  # the one older log kept: at most twice LOG_MAX
            finally:
                os.close(fd)
    except OSError:
        pass
    try:
        import syslog

        syslog.openlog("dumplib-postmortem", syslog.LOG_PID, syslog.LOG_DAEMON)
        level = syslog.LOG_WARNING if record.get("outcome") != "written" else syslog.LOG_INFO
        syslog.syslog(level, _readable(record))
    except Exception:  # noqa: BLE001 - the log must never be why a crash is lost
        pass


def _readable(r: Dict[str, Any]) -> str:
    # ascii() keeps the crasher's bytes (newlines too) from forging log lines.
    who = f"process {r.get('pid')} ({ascii(r.get('name', '?'))}, {ascii(r.get('exe', '?'))}) {r.get('signal', '?')}"
    if r.get("outcome") == "written":
        return f"{who}: wrote {r.get('path')} ({r.get('kind')}, {r.get('size')} bytes){' ' + r['note'] if r.get('note') else ''}"
    return f"{who}: {r.get('outcome')}: {r.get('why')}"


# -- the handler ---------------------------------------------------------------------------------------


def _safe_fds() -> None:
    """fds 1 and 2 on /dev/null: a usermode helper may start without them, and a dump file must never
    get the number a stray print writes to."""
    for fd in (1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open("/dev/null", os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def parse_args(argv: Sequence[str]) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for word in argv:
        if word[:1] in SPECIFIERS and word[:1] not in out:
            out[word[:1]] = word[1:]
    return out


def main(argv: Sequence[str], state_dir: str) -> int:
    """Handle one crash; always 0 (the kernel ignores it), everything said in the log."""
    started = time.monotonic()
    _safe_fds()
    config = read_private_json(os.path.join(state_dir, CONFIG))
    budget = float((config or {}).get("max_seconds") or 120)
    # The last word on "bounded": whatever hangs, SIGALRM's default action ends the handler and the
    # kernel lets the crashed process go (a temporary left behind is removed by the next dump there).
    signal.alarm(int(budget) + 15)
    pipe = corestream.Pipe(0, stall=min(30.0, budget), deadline=started + budget)
    record: Dict[str, Any] = {"time": datetime.datetime.now().isoformat(timespec="seconds"), "args": list(argv)}
    backend: Optional[StreamCore] = None
    try:
        if config is None:
            raise Refused("not-configured", f"{os.path.join(state_dir, CONFIG)} is missing or not root's own")
        args = parse_args(argv)
        crashed = identify(args)
        record.update(pid=crashed.pid, name=crashed.name, exe=crashed.exe.decode("utf-8", "surrogateescape"),
                      uid=crashed.uid, dumpable=crashed.dumpable, pidfd="kernel" if args.get("F") else "opened")
        if crashed.dumpable not in (1, 2):
            # The kernel never calls us for 0; whoever else did gets what the kernel would do.
            raise Refused("not-dumpable", f"the process is not dumpable (%d={crashed.dumpable})")
        take_rate_slot(state_dir, crashed.exe, config.get("max_per"), time.time(), crashed.uid,
                       config.get("max_exes_per_user", USER_EXES))
        if crashed.maps_locked:
            record["maps_locked"] = True
            if DumpKind.parse(config.get("kind") or "mini") is not DumpKind.FULL:
                # A kind narrower than the kernel's core needs the maps, and the kernel's own stream waits
                # behind the same lock: nothing to wait for. The handler ends now and its pipe closes; the
                # crashed process itself ends only once the lock comes free (its core and its exit both
                # take it: even SIGKILL leaves it in do_exit, measured), which no one here can hasten.
                raise Refused("memory-map-locked", locked_message(crashed.pid))
        head = corestream.read_head(pipe)
        record["signal"] = _signal_name(head.signal[0])
        backend = StreamCore(crashed, pipe, head, started, config.get("min_free"))
        result = _dump(backend, crashed, head, config)
        record.update(outcome="written", path=result.path, kind=result.kind, size=result.size,
                      note="; ".join(w for w in result.warnings if w.startswith("--fit")) or None)
    except Refused as exc:
        record.update(outcome=exc.what, why=exc.why)
    except InsufficientDiskSpace as exc:
        record.update(outcome="refused-for-space", why=exc.message)
    except DumpError as exc:
        record.update(outcome="failed", why=exc.message)
    except Exception as exc:  # noqa: BLE001 - logged, never a traceback into the void
        record.update(outcome="failed", why=f"{type(exc).__name__}: {exc}")
    finally:
        # Every refusal closes the pipe unread: the kernel's write fails and its dump ends, the crashed
        # process goes at once, and no one can make root's handlers copy a large core for nothing.
        record["read_bytes"] = pipe.position
        if backend is not None:
            backend.release_pipe()
            record["released_after_seconds"] = backend.released_after
        else:
            try:
                os.close(0)
            except OSError:
                pass
            record["released_after_seconds"] = round(time.monotonic() - started, 3)
    record["seconds"] = round(time.monotonic() - started, 3)
    record["max_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # what a crash cost root's memory
    log_line(state_dir, record)
    signal.alarm(0)
    return 0


def root_only_dir(path: str) -> None:
    """Refused('untrusted-dir') unless every component of *path* is a real directory (no symlink) root
    owns, none writable by others (a sticky parent aside): install checked it, but a parent under /tmp
    is gone after a reboot and anyone may make it again, with a symlink where DIR was."""
    parts = path.split("/")
    for i in range(1, len(parts) + 1):
        here = "/".join(parts[:i]) or "/"
        try:
            st = os.lstat(here)
        except OSError as exc:
            raise Refused("untrusted-dir", f"{here} cannot be looked at ({exc.strerror}); nothing was dumped") from None
        last = i == len(parts)
        if (not stat.S_ISDIR(st.st_mode) or st.st_uid != 0
                or (st.st_mode & 0o022 and (last or not st.st_mode & stat.S_ISVTX))):
            what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory" if not stat.S_ISDIR(st.st_mode) \
                else "not root's only"
            raise Refused("untrusted-dir", f"{here} is {what} (uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})"
                          " since install; nothing was dumped. Use a directory only root can"
                          " write (not under /tmp)")


#: The variables an egress environment file may set: credentials, region, endpoint and dumplib's upload
#: settings, named one by one. Nothing that names a file or a command (AWS_CONFIG_FILE's
#: credential_process runs one, AWS_DATA_PATH loads code-like models, AZURE_FEDERATED_TOKEN_FILE,
#: AZURE_CLIENT_CERTIFICATE_PATH...), no PATH, PYTHON* or LD_*: the handler runs as root at every crash.
ENV_ALLOWED = frozenset({
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_EC2_METADATA_DISABLED", "AWS_USE_FIPS_ENDPOINT",
    "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT", "AZURE_CLIENT_ID", "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET", "AZURE_AUTHORITY_HOST",
    "DUMPLIB_UPLOAD_BUFFER", "DUMPLIB_UPLOAD_STALL"})
#: The prefixes of the variables the handler clears before it sets the file's (none inherited counts).
ENV_NAMES = ("AWS_", "AZURE_", "DUMPLIB_UPLOAD_")
ENV_FILE_MAX = 1 << 16


def read_env_file(path: str) -> Dict[str, str]:
    """The variables of an egress environment file (``NAME=value`` lines, ``#`` comments; a value wholly
    inside one pair of quotes loses them), which must be a regular file root owns and only root can read
    or write (it holds store credentials), reached without a symlink. Refused: anything else, or a name
    outside ENV_ALLOWED."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise Refused("untrusted-env-file", f"the egress environment file {path} cannot be opened ({exc.strerror})"
                      " or is a symlink") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o077:
            raise Refused("untrusted-env-file", f"the egress environment file {path} must be a regular file root"
                          f" owns with mode 600 (it is uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})")
        data = os.read(fd, ENV_FILE_MAX + 1)
    finally:
        os.close(fd)
    if len(data) > ENV_FILE_MAX:
        raise Refused("untrusted-env-file", f"the egress environment file {path} is over {ENV_FILE_MAX} bytes")
    out: Dict[str, str] = {}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("untrusted-env-file", f"the egress environment file {path} is not UTF-8 text") from None
    # Lines end at \n (and a \r before it) only: str.splitlines() would also end one at \x85, \u2028,
    # \v or \f inside a value, and a second NAME= hidden there would win.
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip("\r").strip(" \t")
        if not line or line.startswith("#"):
            continue
        name, eq, value = line.partition("=")
        name = name.strip()
        if not eq or name not in ENV_ALLOWED or "\0" in value:
            # The line is not repeated: it may hold a secret.
            raise Refused("untrusted-env-file", f"{path} line {number}: only NAME=value lines of the store's credential,"
                          f" region and endpoint variables are taken ({', '.join(sorted(ENV_ALLOWED))}); none naming a"
                          " file or a command")
        value = value.strip(" \t")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            # One pair of quotes around the whole value is taken off (a secret pasted as SECRET="abc" is
            # abc); nothing inside is interpreted: no escapes, no $, no comment.
            value = value[1:-1]
        out[name] = value
    return out


def swap_store_variables(variables: Dict[str, str]) -> Dict[str, str]:
    """Put *variables* in place of every store variable (ENV_NAMES) of this process's environment, so none
    of the caller's own is left beside the installed ones; returns those taken out (to put back)."""
    removed = {name: os.environ.pop(name) for name in [n for n in os.environ if n.startswith(ENV_NAMES)]}
    os.environ.update(variables)
    return removed


def egress_environment(config: Dict[str, Any]) -> None:
    """The environment a dump to a URL needs, in this process: the kernel starts the handler with next to
    none (HOME=/, PATH), so the store's variables come from the root-only file install named, and the
    retention key is the state directory's."""
    variables: Dict[str, str] = {}
    if config.get("env_file"):
        env_file = str(config["env_file"])
        # Install checked the file's directory; by the crash it may have been made again (a parent under
        # /tmp after a reboot) with someone's file in it: every component again, as for a local DIR.
        root_only_dir(os.path.dirname(env_file))
        variables = read_env_file(env_file)
    swap_store_variables(variables)
    from .._egress.signing import KEY_VARIABLE  # only for a URL

    os.environ[KEY_VARIABLE] = str(config["egress_key"])


def _dump(backend: StreamCore, crashed: Crashed, head: corestream.CoreHead, config: Dict[str, Any]) -> DumpResult:
    directory = str(config["dir"])
    from ..remote import is_remote

    if is_remote(directory):
        egress_environment(config)
        backend.where = None  # no local volume to guard
        path = directory  # a prefix (install made it end in "/"): dumplib names the object
    else:
        root_only_dir(directory)
        backend.where = directory
        path = directory + os.sep
    signo, code, address = head.signal
    event = TargetEvent(kind="signal", tid=head.threads[0][0] if head.threads else crashed.tid, code=signo,
                        address=address, raw=head.siginfo)
    from ..compression import parse_codec

    opts = api._Options(
        path=path, kind=DumpKind.parse(config.get("kind") or "mini"), flags=None, overwrite=False,
        comment=None, progress=None, min_free=config.get("min_free"), space_check=True, fit=bool(config.get("fit")),
        sidecar=True, keep=config.get("keep"), max_total=config.get("max_total"),
        codec=parse_codec(config.get("compress")), started=time.monotonic(), started_at=datetime.datetime.now(),
        max_pause=None, snapshot=False, event=event)
    return api.create_in_session(backend, backend, None, opts)
