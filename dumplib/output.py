"""Where the dump goes: name tokens, the temporary-file discipline, the final no-clobber rename."""
from __future__ import annotations

import dataclasses
import datetime
import os
import re
import secrets
from typing import List, Optional, Union

from .errors import DumpExists, InvalidDumpPath
from .kinds import DumpKind
from .results import ProcessInfo

__all__ = ["Destination", "plan_destination", "expand_tokens", "finalize", "remove_quietly", "TEMP_PREFIX"]

#: Temporary files are ``.dumplib-<owner pid>-<random>.<final name>.tmp`` in the destination directory,
#: so a stale one (its owner killed) is recognisable and its owner checkable.
TEMP_PREFIX = ".dumplib-"
TEMP_RE = re.compile(r"^\.dumplib-(\d+)-[0-9a-f]{8}\..*\.tmp$")

DEFAULT_TEMPLATE = "{name}_{pid}_{date}_{time}"

# ProcDump's upper-case tokens, replaced only as whole words so "PIDGIN" or "C:\PIDS" survive.
_PROCDUMP_TOKENS = {"PROCESSNAME": "name", "PID": "pid", "YYMMDD": "date", "HHMMSS": "time"}
_PROCDUMP_RE = re.compile(r"(?<![A-Za-z0-9])(PROCESSNAME|PID|YYMMDD|HHMMSS)(?![A-Za-z0-9])")
_BRACE_RE = re.compile(r"\{(name|pid|date|time|kind)\}")
_UNSAFE_RE = re.compile(r'[<>:"/\\|?*\x00-\x1f]')

PathLike = Union[str, "os.PathLike[str]"]


@dataclasses.dataclass(frozen=True)
class Destination:
    final: str
    temp: str
    directory: str


def _safe_name(name: str) -> str:
    if name.lower().endswith(".exe"):
        name = name[:-4]
    return _UNSAFE_RE.sub("_", name) or "process"


def expand_tokens(text: str, target: ProcessInfo, kind: DumpKind, when: datetime.datetime) -> str:
    """Replace ``{name} {pid} {date} {time} {kind}`` and ProcDump's ``PROCESSNAME PID YYMMDD HHMMSS``."""
    values = {
        "name": _safe_name(target.name),
        "pid": str(target.pid),
        "date": when.strftime("%y%m%d"),
        "time": when.strftime("%H%M%S"),
        "kind": kind.value,
    }
    text = _BRACE_RE.sub(lambda m: values[m.group(1)], text)
    return _PROCDUMP_RE.sub(lambda m: values[_PROCDUMP_TOKENS[m.group(1)]], text)


def plan_destination(
    path: Optional[PathLike],
    target: ProcessInfo,
    kind: DumpKind,
    *,
    overwrite: bool,
    extension: str,
    when: Optional[datetime.datetime] = None,
) -> Destination:
    """Decide the final and temporary paths, refusing bad ones before the target is touched."""
    when = when or datetime.datetime.now()
    raw = os.getcwd() if path is None else os.fspath(path)
    if not raw:
        raise InvalidDumpPath("the dump path is empty; pass a file or directory path", path=raw)
    expanded = expand_tokens(raw, target, kind, when)
    if os.path.isdir(expanded):
        # A name dumplib chose itself never collides: dumps taken within one second (a watchdog
        # in a loop) get -1, -2... An explicit file name is the user's, and DumpExists protects it.
        stem = os.path.join(expanded, expand_tokens(DEFAULT_TEMPLATE, target, kind, when))
        final = stem + extension
        n = 0
        while os.path.lexists(final) and not overwrite:
            n += 1
            final = f"{stem}-{n}{extension}"
    elif expanded.endswith(("/", os.sep)):
        raise InvalidDumpPath(
            f"directory {expanded} does not exist; create it first (dumplib never creates directories)",
            path=expanded,
        )
    else:
        final = expanded
    final = os.path.abspath(final)
    directory = os.path.dirname(final)
    if not os.path.isdir(directory):
        raise InvalidDumpPath(
            f"directory {directory} does not exist; create it first or choose another path"
            " (dumplib never creates directories)",
            path=final,
        )
    if os.path.lexists(final):
        if os.path.islink(final) or not os.path.isfile(final):
            raise InvalidDumpPath(
                f"{final} exists and is not a regular file; choose another path", path=final
            )
        if not overwrite:
            raise DumpExists(final)
    if not os.access(directory, os.W_OK):
        why = "its filesystem is mounted read-only" if _read_only(directory) else "permission denied"
        raise InvalidDumpPath(f"cannot create {final}: {why}; choose a writable directory", path=final)
    temp_name = f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.{os.path.basename(final)}.tmp"
    return Destination(final=final, temp=os.path.join(directory, temp_name), directory=directory)


def _read_only(directory: str) -> bool:
    statvfs = getattr(os, "statvfs", None)
    return bool(statvfs and statvfs(directory).f_flag & os.ST_RDONLY)


def finalize(temp: str, final: str, *, overwrite: bool) -> None:
    """Move the verified temporary file into place; without *overwrite* never clobber a file."""
    if overwrite:
        os.replace(temp, final)
        return
    try:
        if os.name == "nt":
            os.rename(temp, final)  # fails with FileExistsError rather than replacing
        else:
            _link_into_place(temp, final)
    except FileExistsError:
        raise DumpExists(final) from None


def _link_into_place(temp: str, final: str) -> None:
    try:
        os.link(temp, final)  # atomic no-clobber, unlike rename(2)
    except FileExistsError:
        raise
    except OSError:
        # Filesystems without hard links (vfat, some FUSE): check-then-rename is the best there is.
        if os.path.lexists(final):
            raise FileExistsError(final) from None
        os.rename(temp, final)
        return
    os.unlink(temp)


def remove_stale_temps(directory: str) -> List[str]:
    """Delete temporary files in *directory* left by a dumplib that was killed (its owner pid is gone)."""
    removed: List[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = TEMP_RE.match(name)
        if m and not _pid_alive(int(m.group(1))):
            remove_quietly(os.path.join(directory, name))
            removed.append(name)
    return removed


def _pid_alive(pid: int) -> bool:
    import psutil

    return pid == os.getpid() or psutil.pid_exists(pid)


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        # Best effort on a failure path; the caller is already raising the real error.
        pass
