"""The /proc layer: another process's stat, status, task list and small files, each parsed once, with named fields.

Modelled on psutil's _pslinux.py, without importing psutil (the one-shot command, `dumplib dump PID`,
needs a name, a start time, a command line and whether a pid is a process; psutil costs more to import
than all of that costs to read). Everything read here is chosen by the target (its comm, its argv):
decoded with surrogateescape, never trusted to parse. Reads that take the target's mmap lock
(cmdline, environ, maps, smaps, mem) go through read_mm_file, bounded (dumplib/_bounded.py).
The smaps parser is proc/maps.py; what an OSError from these reads means is proc/errors.py.
"""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import os

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Dict, Hashable, List, NamedTuple, Optional
else:
    from ..._typing import NamedTuple

from ...errors import ProcessNotFound

#: The kernel truncates comm to 15 bytes; a longer name is recovered from argv[0] when it agrees.
COMM_MAX = 15
#: How long a read of a /proc file that takes the process's mmap lock (cmdline) may wait: microseconds
#: as a rule; a process whose lock is held for good (a fault stuck on a stalled FUSE or NFS mount)
#: costs this once, then its later reads fail at once until the stuck one returns (see _bounded).
MM_READ_SECONDS = 1.0
#: Bytes asked of the kernel per read() of such a file: it takes the lock for each read() call, so a
#: bound on each call (_bounded.blocking) does not grow with the file (60 000 mappings: 45 MB of smaps).
MM_CHUNK = 1 << 20


def _read(pid: int, name: str) -> bytes:
    """/proc/PID/NAME, whole (an unbounded read: only for files whose read takes no lock of the target's)."""
    with open(f"/proc/{pid}/{name}", "rb") as f:
        return f.read()


def mm_key(pid: int) -> Hashable:
    """The _bounded key of reads that take *pid*'s mmap lock (cmdline, environ, maps, smaps, mem)."""
    return ("mm", pid)


def read_mm_file(pid: int, name: str, seconds: float = MM_READ_SECONDS) -> bytes:
    """/proc/PID/NAME for a file whose read takes the process's mmap lock, abandoned after *seconds*
    (_bounded.Unanswered, a TimeoutError, an OSError) so that one stuck process cannot hang the reader."""
    from ..._bounded import call_within  # only a read of such a file needs it

    return call_within(lambda: read_locked(f"/proc/{pid}/{name}"), seconds, mm_key(pid))


def read_locked(path: str) -> bytes:
    """A /proc file whose read() calls take a process's mmap lock (smaps, maps, cmdline...), whole,
    MM_CHUNK per _bounded.blocking call: given up on, in a bounded worker, once one call waits too long."""
    from ..._bounded import blocking

    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # the open takes no lock: each read() does
    try:
        parts: List[bytes] = []
        while True:
            part = blocking(os.read, fd, MM_CHUNK)
            if not part:
                return b"".join(parts)
            parts.append(part)
    finally:
        os.close(fd)


def _text(data: bytes) -> str:
    return data.decode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())


# The fields of /proc/PID/stat dumplib uses, by name (proc(5) numbers them from 1). The call form, not
# the class form: under `from __future__ import annotations` the class form's field types are strings,
# which typing compiles at import (the first compile() in a process costs ~4 ms: start-up).
Stat = NamedTuple("Stat", [
    ("comm", bytes),  # (2) the command name, the kernel's bytes (at most COMM_MAX of them)
    ("state", str),  # (3) one-letter scheduler state: R, S, D, T, t, Z, X...
    ("ppid", int),  # (4) parent's pid
    ("pgrp", int),  # (5) process group
    ("session", int),  # (6) session
    ("flags", int),  # (9) PF_* flags (PF_KTHREAD marks a kernel thread)
    ("nice", int),  # (19) nice value
    ("start_ticks", int),  # (22) start, in clock ticks after boot
])


# Positions after the command name: /proc/PID/stat field number minus 3 (pid and comm come first).
_STATE, _PPID, _PGRP, _SESSION, _FLAGS, _NICE, _START = 0, 1, 2, 3, 6, 16, 19


def parse_stat(data: bytes) -> Optional[Stat]:
    """Stat from the text of a /proc/PID/stat (or task/TID/stat); None if it does not parse."""
    # comm sits between the first "(" and the last ")" and may itself hold spaces and parentheses.
    left, right = data.find(b"("), data.rfind(b")")
    if left < 0 or right < left:
        return None
    rest = data[right + 2:].split()
    try:
        return Stat(data[left + 1:right], rest[_STATE].decode("ascii", "replace"), int(rest[_PPID]),
                    int(rest[_PGRP]), int(rest[_SESSION]), int(rest[_FLAGS]), int(rest[_NICE]), int(rest[_START]))
    except (IndexError, ValueError):
        return None


def read_stat(pid: int, tid: Optional[int] = None) -> Optional[Stat]:
    """/proc/PID/stat (or one thread's), parsed; None if the process is gone or hidden."""
    try:
        data = _read(pid, "stat" if tid is None else f"task/{tid}/stat")
    except OSError:
        return None
    return parse_stat(data)


#: task_struct's flags (/proc/PID/stat field 9): in do_exit.
PF_EXITING = 0x4


def thread_ending(pid: int, tid: int) -> bool:
    """Whether thread *tid* of process *pid* has ended or is ending: gone, a zombie (Z) or dead (X), in
    do_exit (PF_EXITING), or with a SIGKILL pending (it has yet to reach do_exit, and nothing stops it
    doing so). A process killed is not a zombie yet while it exits, and its memory may be gone already."""
    stat = read_stat(pid, tid)
    if stat is None or stat.state in ("Z", "X") or stat.flags & PF_EXITING:
        return True
    status = read_status(pid, tid)
    if not status:
        return True  # gone meanwhile
    try:
        pending = int(status.get("SigPnd", "0"), 16) | int(status.get("ShdPnd", "0"), 16)
    except ValueError:
        return False
    return bool(pending & (1 << (9 - 1)))  # SIGKILL is 9 on Linux


def has_capability(bit: int) -> bool:
    """Whether this process holds capability *bit* (linux/capability.h's number) in its effective set."""
    try:
        return bool(int(read_status(os.getpid()).get("CapEff", "0"), 16) >> bit & 1)
    except ValueError:
        return False


def read_status(pid: int, tid: Optional[int] = None) -> Dict[str, str]:
    """/proc/PID/status (or one thread's) as a dict; empty when the process is gone."""
    out: Dict[str, str] = {}
    try:
        data = _read(pid, "status" if tid is None else f"task/{tid}/status")
    except OSError:
        return out
    for line in data.splitlines():
        key, _, value = line.decode("utf-8", "backslashreplace").partition(":")
        out[key] = value.strip()
    return out


def list_tids(pid: int) -> List[int]:
    """The process's threads, lowest first; ProcessNotFound once it is gone."""
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        raise ProcessNotFound.exited(pid) from None


def tids_or_none(pid: int) -> List[int]:
    """list_tids, or [] once the process is gone."""
    try:
        return list_tids(pid)
    except ProcessNotFound:
        return []


def thread_state(pid: int, tid: int) -> str:
    """The one-letter scheduler state of a thread ('' when it is gone)."""
    stat = read_stat(pid, tid)
    return stat.state if stat is not None else ""


def thread_states(pid: int) -> Dict[int, str]:
    """tid -> scheduler state of every thread of *pid* (empty once it is gone)."""
    out: Dict[int, str] = {}
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return out
    for tid in tids:
        state = thread_state(pid, tid)
        if state:
            out[tid] = state
    return out


def parent_of(pid: int) -> int:
    """The parent's pid (0: unknown, or gone)."""
    stat = read_stat(pid)
    return stat.ppid if stat is not None else 0


def read_small_text(path: str) -> str:
    """A short kernel-written /proc (or cgroup) value, undecodable bytes escaped; '' if unreadable."""
    try:
        with open(path, "rb") as f:
            return f.read(256).decode("ascii", "backslashreplace").strip()
    except OSError:
        return ""


def private_bytes(pid: int) -> Optional[int]:
    """Memory only process *pid* holds: its private pages (smaps_rollup) and its page tables (VmPTE)."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith((b"Private_Clean:", b"Private_Dirty:")):
                    total += int(line.split()[1]) * 1024
        total += int(read_status(pid).get("VmPTE", "0 kB").split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return total


def pid_in_namespace_of(pid: int, other: int) -> Optional[int]:
    """*pid*'s number in the pid namespace process *other* lives in (NSpid lists it from ours inwards,
    one entry per level); *pid* itself where the kernel does not say."""
    mine, theirs = read_status(pid).get("NSpid", "").split(), read_status(other).get("NSpid", "").split()
    if not mine or not theirs:
        return pid
    level = len(theirs) - 1
    return int(mine[level]) if level < len(mine) else None


def pid_exists(pid: int) -> bool:
    """Whether *pid* is a process (not a thread of one: /proc/TID exists too, with another Tgid)."""
    try:
        for line in _read(pid, "status").splitlines():
            if line.startswith(b"Tgid:"):
                return int(line.split()[1]) == pid
    except FileNotFoundError:
        return False
    except (OSError, ValueError, IndexError):
        pass
    try:  # status unreadable: the listing of /proc holds processes only
        return str(pid) in os.listdir("/proc")
    except OSError:
        return False


def command_line(pid: int) -> Optional[List[str]]:
    """argv as the process now shows it (None: gone or hidden; []: a zombie or a kernel thread)."""
    try:
        data = _text(read_mm_file(pid, "cmdline"))
    except OSError:  # gone, hidden, or its mmap lock held for good (TimeoutError)
        # No thread to read it in (DumpFailed no-resources) is raised: taken as "gone", a name lookup
        # would report a running process "not found". name_of(exact=False) and a ps row catch it.
        return None
    if not data:
        return []
    # A process that rewrote its title (setproctitle) may separate words by spaces instead of NULs.
    sep = "\x00" if data.endswith("\x00") else " "
    if data.endswith(sep):
        data = data[:-1]
    words = data.split(sep)
    if sep == "\x00" and len(words) == 1 and " " in data:
        words = data.split(" ")
    return words


#: task_struct's flags: a kernel thread (no memory map, no command line).
PF_KTHREAD = 0x00200000


def name_of(pid: int, exact: bool = True) -> Optional[str]:
    """The process name: comm, or argv[0]'s base name where comm is its truncated start.

    The command line needs a worker thread (read_mm_file): refused one (a pids limit), *exact* raises
    DumpFailed no-resources, else comm's cut-short name is given (a listing: a row's label)."""
    stat = read_stat(pid)
    if stat is None:
        return None
    name = _text(stat.comm)
    if len(name) >= COMM_MAX and not stat.flags & PF_KTHREAD:  # a kernel thread's name is its comm
        try:
            argv = command_line(pid)
        except Exception as exc:
            from ..._bounded import unanswered

            if exact or not unanswered(exc):
                raise
            return name
        if argv:
            longer = os.path.basename(argv[0])
            if longer.startswith(name):
                name = longer
    return name


def boot_time() -> Optional[float]:
    """When the system booted, seconds since the epoch (/proc/stat's btime)."""
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime"):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def start_ticks(pid: int) -> Optional[int]:
    """The process's start in clock ticks after boot (/proc/PID/stat field 22)."""
    stat = read_stat(pid)
    return stat.start_ticks if stat is not None else None


def started(pid: int) -> Optional[float]:
    """The process's start, seconds since the epoch: boot time + start ticks / CLK_TCK (psutil's create_time)."""
    ticks, boot = start_ticks(pid), boot_time()
    if ticks is None or boot is None:
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")
