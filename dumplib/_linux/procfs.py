"""Facts about one process read straight from /proc, as psutil would give them, without importing psutil.

The one-shot command (`dumplib dump PID`) needs a name, a start time, a command line and whether a
pid is a process; psutil costs more to import than all of that costs to read. Everything read here
is chosen by the target (its comm, its argv): decoded with surrogateescape, never trusted to parse.
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional

assert sys.platform.startswith("linux")  # Linux only (and mypy checks this module only there)

#: The kernel truncates comm to 15 bytes; a longer name is recovered from argv[0] when it agrees.
COMM_MAX = 15
#: How long a read of a /proc file that takes the process's mmap lock (cmdline) may wait: microseconds
#: as a rule; a process whose lock is held for good (a fault stuck on a stalled FUSE or NFS mount)
#: costs this once, then its later reads fail at once until the stuck one returns (see _bounded).
MM_READ_SECONDS = 1.0


def _read(pid: int, name: str) -> bytes:
    with open(f"/proc/{pid}/{name}", "rb") as f:
        return f.read()


def mm_key(pid: int) -> tuple:
    """The _bounded key of reads that take *pid*'s mmap lock (cmdline, environ, maps, smaps, mem)."""
    return ("mm", pid)


def read_mm_file(pid: int, name: str, seconds: float = MM_READ_SECONDS) -> bytes:
    """/proc/PID/NAME for a file whose read takes the process's mmap lock, abandoned after *seconds*
    (TimeoutError, an OSError) so that one stuck process cannot hang the reader."""
    from .._bounded import call_within

    return call_within(lambda: _read(pid, name), seconds, mm_key(pid))


def _text(data: bytes) -> str:
    return data.decode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())


def _stat(pid: int) -> Optional[tuple]:
    """(comm bytes, the fields after it) from /proc/PID/stat; None if the process is gone or hidden."""
    try:
        data = _read(pid, "stat")
    except OSError:
        return None
    # comm sits between the first "(" and the last ")" and may itself hold spaces and parentheses.
    left, right = data.find(b"("), data.rfind(b")")
    if left < 0 or right < left:
        return None
    return data[left + 1:right], data[right + 2:].split()


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


def name_of(pid: int) -> Optional[str]:
    """The process name: comm, or argv[0]'s base name where comm is its truncated start."""
    stat = _stat(pid)
    if stat is None:
        return None
    name = _text(stat[0])
    if len(name) >= COMM_MAX:
        argv = command_line(pid)
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
    stat = _stat(pid)
    try:
        return int(stat[1][19]) if stat is not None else None
    except (IndexError, ValueError):
        return None


def started(pid: int) -> Optional[float]:
    """The process's start, seconds since the epoch: boot time + start ticks / CLK_TCK (psutil's create_time)."""
    ticks, boot = start_ticks(pid), boot_time()
    if ticks is None or boot is None:
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")
