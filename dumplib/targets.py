"""Finding the process to dump: by pid or by name, refusing ambiguity."""
from __future__ import annotations

import os

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Set, TypeVar, Union
else:
    from ._typing import TypeVar

from ._platform import Platform
from ._text import printable
from .errors import AmbiguousProcess, ProcessNotFound
from .results import ProcessInfo

__all__ = ["resolve_target", "processes"]

if TYPE_CHECKING:
    Target = Union[int, str]
else:  # a type alias: at run time only its name (dumplib/_typing.py)
    Target = object


def _name_key(name: str, windows: bool) -> str:
    if not windows:
        return name
    name = name.lower()
    return name[:-4] if name.endswith(".exe") else name


def _info(pid: int, name: str, platform: Platform) -> ProcessInfo:
    return ProcessInfo(pid=pid, name=printable(name), started=platform.started(pid))


#: Larger than any pid an OS hands out (Linux: 2**22, Windows: a DWORD); beyond it nothing can match.
PID_LIMIT = 2**32 - 1


def _is_pid_text(text: str) -> bool:
    """Whether *text* names a pid: ASCII digits only ("\\u0663" and "\\u00b2" are digits to Python, not pids)."""
    return text.isascii() and text.isdigit()


def resolve_target(target: Target, platform: Optional[Platform] = None) -> ProcessInfo:
    """The one process *target* names: a pid (an int, or a str of ASCII digits), ``svc:NAME`` (the
    process of a Windows service, from the service control manager), or a process name matching
    exactly one process.

    Names compare case-insensitively and without ``.exe`` on Windows. A name never matches the calling
    process, nor the launchers it was started by that are the same program (a venv's ``python.exe``
    redirector, a wrapper), so ``dumplib dump python`` finds the *other* Python. A process whose name is
    not valid UTF-8 matches its name as the OS gives it (surrogate-escaped) or as dumplib shows it (``\\xNN``).
    """
    if platform is None:
        from ._switch import current  # called as dumplib.resolve_target: this OS's platform

        platform = current()
    if isinstance(target, bool) or not isinstance(target, (int, str)):
        raise ProcessNotFound(target, f"target must be a pid (int) or a process name (str), not {target!r}")
    if isinstance(target, str) and target.strip()[:4].lower() == SERVICE_PREFIX:
        return _by_service(target.strip()[4:].strip(), platform)
    if isinstance(target, str) and _is_pid_text(target.strip()):
        target = int(target.strip())
    if isinstance(target, int):
        return _by_pid(target, platform)
    return _by_name(target, platform)


#: ``svc:NAME``: the process of the Windows service NAME, from the service control manager.
SERVICE_PREFIX = "svc:"


def _by_service(name: str, platform: Platform) -> ProcessInfo:
    return _by_pid(platform.service_pid(name), platform)


def _by_pid(pid: int, platform: Platform) -> ProcessInfo:
    if not 0 < pid <= PID_LIMIT or not _pid_exists(pid, platform):
        owner = _thread_owner(pid) if 0 < pid <= PID_LIMIT else None
        if owner is not None:
            raise ProcessNotFound(pid, f"{pid} is a thread of process {owner}, not a process; dump process {owner}")
        raise ProcessNotFound(pid, f"no process has pid {pid}; list processes with `dumplib ps`")
    name = platform.name_of(pid, exact=False)  # a label here: cut short rather than no dump at a pids limit
    if name is None:
        from ._psutil import psutil  # psutil only when the platform's own look-up found nothing

        try:
            name = psutil.Process(pid).name()
        except (psutil.Error, OSError):
            raise ProcessNotFound.exited(pid) from None
    return _info(pid, name, platform)


def _pid_exists(pid: int, platform: Platform) -> bool:
    try:
        return platform.pid_exists(pid)
    except (OverflowError, ValueError):  # larger than the OS's pid type
        return False


def _thread_owner(tid: int) -> Optional[int]:
    """The process that has a thread *tid* (thread and process ids share one number space on both OSes)."""
    from ._psutil import psutil  # a mistaken pid only: never on the way to a dump

    for proc in psutil.process_iter():
        try:
            if any(t.id == tid for t in proc.threads()) and proc.pid != tid:
                return proc.pid
        except (psutil.Error, OSError):
            continue
    return None


def _by_name(target: str, platform: Platform) -> ProcessInfo:
    windows = platform.names_fold_case
    wanted = _name_key(target.strip(), windows)
    if not wanted:
        raise ProcessNotFound(target, "an empty process name matches nothing; pass a pid or a name")
    table = _exact_for(wanted, platform.process_table(), platform)
    ours = _launcher_chain(table, windows)
    matches = [
        (pid, name)
        for pid, name in table.items()
        if pid not in ours and wanted in (_name_key(name, windows), _name_key(printable(name), windows))
    ]
    if not matches:
        raise ProcessNotFound(target)
    if len(matches) > 1:
        raise AmbiguousProcess(target, sorted((_info(pid, name, platform) for pid, name in matches), key=lambda p: p.pid))
    return _info(*matches[0], platform)


def _exact_for(wanted: str, table: Dict[int, str], platform: Platform) -> Dict[int, str]:
    """*table* with the names that may be cut short of *wanted* (a proper prefix of it: Linux's 15-byte
    comm, where the command line that names it whole could not be read for the listing) asked again,
    exactly: at a pids limit that raises DumpFailed no-resources rather than miss a running process."""
    windows = platform.names_fold_case
    for pid, name in list(table.items()):
        key = _name_key(name, windows)
        if key and key != wanted and wanted.startswith(key):
            exact = platform.name_of(pid)
            if exact is None:
                del table[pid]  # gone since the listing
            else:
                table[pid] = exact
    return table


def _launcher_chain(table: Dict[int, str], windows: bool, depth: int = 16) -> Set[int]:
    """This process and the unbroken line of ancestors that are the same program as it: the same name,
    or the same executable under another name (``python3`` started by a ``python`` that forked).

    A venv's ``python.exe`` on Windows is a redirector whose child is the real interpreter, and a wrapper
    may fork the program it wraps: neither is what a user means by "the other python". The line stops at
    the first ancestor that is another program (a shell, a service manager), which is a real candidate.
    """
    from ._psutil import psutil  # a name to resolve: psutil knows every OS's parents and executables

    me = os.getpid()
    chain = {me}
    ours = table.get(me)
    if ours is None:
        try:
            ours = psutil.Process(me).name()
        except (psutil.Error, OSError):
            return chain
    key, exe = _name_key(ours, windows), _exe(me)
    pid = me
    for _ in range(depth):
        try:
            pid = psutil.Process(pid).ppid()
        except (psutil.Error, OSError):
            break
        if pid <= 0 or pid in chain or pid not in table:
            break
        if _name_key(table[pid], windows) != key and (exe is None or _exe(pid) != exe):
            break
        chain.add(pid)
    return chain


def _exe(pid: int) -> Optional[str]:
    from ._psutil import psutil

    try:
        return os.path.realpath(psutil.Process(pid).exe()) or None
    except (psutil.Error, OSError):
        return None


def processes(filter: Optional[str] = None) -> List[ProcessInfo]:
    """Running processes with user and memory figures, for finding a target (``dumplib ps``).

    *filter* keeps processes whose name contains it (case-insensitively) or whose pid equals it.
    Figures the OS will not give (another user's process, say) are None.
    """
    from ._switch import current  # a public entry point: the one place here that picks the platform

    platform = current()
    table: Dict[int, str] = platform.process_table()
    needle = filter.lower() if filter else None
    out: List[ProcessInfo] = []
    for pid, name in sorted(table.items()):
        shown = printable(name)
        if needle and needle not in name.lower() and needle not in shown.lower() and needle != str(pid):
            continue
        out.append(_describe(pid, shown, platform))
    return out


#: `ps`: how long the probe of a process's memory map (its command line) may take, and then its row.
#: A process whose mmap lock is held for good (a fault stuck on a stalled FUSE or NFS mount) would
#: hang every reader of its cmdline or smaps: it costs the probe's bound and shows "?" instead. Only
#: where that can happen (Platform.command_line_can_hang): under Wine at load 10 the probe of a healthy
#: process outgrew the second, and its row showed "?" for nothing.
PROBE_SECONDS = 1.0
ROW_SECONDS = 30.0


def _describe(pid: int, name: str, platform: Platform) -> ProcessInfo:
    """*pid*'s row, its figures read in a worker abandoned when the process's memory map is stuck."""
    from ._bounded import call_within, unanswered

    key = ("mm", pid)  # the key procfs uses for reads that take the mmap lock
    try:
        if platform.command_line_can_hang:
            call_within(lambda: platform.command_line(pid), PROBE_SECONDS, key)
        return call_within(lambda: _figures(pid, name, platform), ROW_SECONDS, key)
    except Exception as exc:  # stuck, or no thread to read it in (a pids limit): that row's figures only
        if not unanswered(exc):
            raise
        return ProcessInfo(pid=pid, name=name)  # every figure unknown: shown as "?"


def _figures(pid: int, name: str, platform: Platform) -> ProcessInfo:
    from ._psutil import psutil  # `dumplib ps`: user and memory figures for every OS

    started = user = private = rss = None
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            started = _try(proc.create_time)
            user = _try(proc.username)
            mem = _try(proc.memory_info)
    except (psutil.Error, OSError):
        mem = None
    if mem is not None:
        rss = mem.rss
        private = platform.private_bytes(mem)
    return ProcessInfo(pid=pid, name=name, started=started, user=user, private_bytes=private, rss_bytes=rss,
                       full_dump_bytes=_full_estimate(platform, pid, name, started))


def _full_estimate(platform: Platform, pid: int, name: str, started: Optional[float]) -> Optional[int]:
    from .errors import DumpError
    from .kinds import DumpKind

    try:
        with platform.open(ProcessInfo(pid, name, started), listing=True) as session:
            plan = session.plan(DumpKind.FULL, platform.normalise_flags(DumpKind.FULL, None))
    except (DumpError, OSError):
        return None  # another user's process, a kernel thread, one that just exited
    return plan.estimate.bytes if plan.estimate else None


_T = TypeVar("_T")


def _try(fn: Callable[[], _T]) -> Optional[_T]:
    from ._psutil import psutil

    try:
        return fn()
    except (psutil.Error, OSError):
        return None
