"""Where the dump goes: its name (tokens, a safe {name}), its temporaries, and how it is placed: no clobbering, all or nothing."""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import os
import re
import stat
import sys
import time
import unicodedata
from typing import Iterator, List, Optional, Sequence, Tuple, Union

from .errors import DumpExists, InvalidDumpPath
from .kinds import DumpKind
from .results import ProcessInfo

__all__ = ["Destination", "plan_destination", "expand_tokens", "finalize_all", "remove_quietly", "TEMP_PREFIX",
           "temp_path", "writing_in", "SIDECAR_SUFFIX"]

#: Temporary files are ``.dumplib-<16 hex>.tmp``: short, so any legal final name is legal beside it,
#: and unguessable, so nothing can be planted at the name before dumplib creates it (O_EXCL anyway).
TEMP_PREFIX = ".dumplib-"
TEMP_RE = re.compile(r"^\.dumplib-[0-9a-f]{16}\.tmp$")
#: ``<dump>.json``: the sidecar's name is the dump's plus this.
SIDECAR_SUFFIX = ".json"
#: Where directories cannot be locked (no flock), a temporary is stale only once untouched this long.
UNLOCKED_STALE_AFTER = 24 * 3600.0
#: Longest {name} expansion: process names are the process's own choice.
NAME_MAX_CHARS = 64

DEFAULT_TEMPLATE = "{name}_{pid}_{date}_{time}"

# ProcDump's upper-case tokens, replaced only as whole words so "PIDGIN" or "C:\PIDS" survive.
_PROCDUMP_TOKENS = {"PROCESSNAME": "name", "PID": "pid", "YYMMDD": "date", "HHMMSS": "time", "EXCEPTIONCODE": "event"}
_TOKEN_RE = re.compile(r"\{(name|pid|date|time|kind|event)\}"
                       r"|(?<![A-Za-z0-9])(PROCESSNAME|PID|YYMMDD|HHMMSS|EXCEPTIONCODE)(?![A-Za-z0-9])")
_EVENT_TOKEN_RE = re.compile(r"\{event\}|(?<![A-Za-z0-9])EXCEPTIONCODE(?![A-Za-z0-9])")
#: ``{event}`` / EXCEPTIONCODE in a dump not taken at a signal, an exception or by a trigger.
NO_EVENT = "NONE"
_UNSAFE_RE = re.compile(r'[<>:"/\\|?*\x00-\x1f]')

PathLike = Union[str, "os.PathLike[str]"]


@dataclasses.dataclass(frozen=True)
class Destination:
    final: str
    temp: str
    directory: str
    #: ``<final>.json`` when a sidecar will be written beside the dump.
    sidecar: Optional[str] = None


def _safe_name(name: str) -> str:
    """A process name made into one harmless file-name component.

    The name is chosen by the process (comm, argv[0]) and may hold separators, ``..``, control
    characters or bytes that are not text: keep letters, digits and ``-_.+``, replace the rest,
    and never start with a dot (no hidden files, no ``.``/``..``)."""
    if name.lower().endswith(".exe"):
        name = name[:-4]
    out = []
    for ch in name[:NAME_MAX_CHARS]:
        ok = ch in "-_.+" or (ch.isalnum() and ch.isprintable() and unicodedata.category(ch)[0] in "LN")
        out.append(ch if ok else "_")
    # No leading dot (hidden, "." or ".."), no leading dash (read as an option by `rm *`).
    safe = "".join(out).lstrip(".-")
    return safe if safe.strip("_") else "process"


def expand_event_token(path: Optional[PathLike], label: str) -> Optional[PathLike]:
    """*path* with ``{event}`` / EXCEPTIONCODE replaced by *label* (a watcher's: ``C0000005``,
    ``SIGSEGV``, ``EXIT3``, ``CPU``...), made one harmless name component; the rest is left to
    expand_tokens. A path without the token comes back as it was."""
    if path is None:
        return None
    text = os.fspath(path)
    if not _EVENT_TOKEN_RE.search(text):
        return path
    value = _safe_name(label)
    return _EVENT_TOKEN_RE.sub(lambda m: value, text)


def expand_tokens(text: str, target: ProcessInfo, kind: DumpKind, when: datetime.datetime) -> str:
    """Replace ``{name} {pid} {date} {time} {kind} {event}`` and ProcDump's ``PROCESSNAME PID YYMMDD
    HHMMSS EXCEPTIONCODE`` (``{event}`` is NO_EVENT here: a watcher fills it first)."""
    values = {
        "name": _safe_name(target.name),
        "pid": str(target.pid),
        "date": when.strftime("%y%m%d"),
        "time": when.strftime("%H%M%S"),
        "kind": kind.value,
        "event": NO_EVENT,
    }
    # One pass over both spellings: a value put in (a process named "PID") is never expanded again.
    return _TOKEN_RE.sub(lambda m: values[m.group(1) or _PROCDUMP_TOKENS[m.group(2)]], text)


def plan_destination(
    path: Optional[PathLike],
    target: ProcessInfo,
    kind: DumpKind,
    *,
    overwrite: bool,
    extension: str,
    when: Optional[datetime.datetime] = None,
    sidecar: bool = False,
) -> Destination:
    """Decide the final and temporary paths, refusing bad ones before the target is touched.

    With *sidecar*, ``<final>.json`` is held to the same rules as the dump: never replaced
    without *overwrite*, never through a symlink or onto something that is not a regular file."""
    when = when or datetime.datetime.now()
    raw = os.getcwd() if path is None else os.fspath(path)
    if not raw:
        raise InvalidDumpPath("the dump path is empty; pass a file or directory path", path=raw)
    expanded = expand_tokens(raw, target, kind, when)
    if _components(expanded) != _components(raw):
        # Unreachable with _safe_name; kept so no future token can move the dump elsewhere.
        raise InvalidDumpPath(f"the path template {raw} expanded to {expanded}, outside the directory it names",
                              path=expanded)
    if os.path.isdir(expanded):
        # A name dumplib chose itself never collides: dumps taken within one second (a watchdog
        # in a loop) get -1, -2... An explicit file name is the user's, and DumpExists protects it.
        stem = os.path.join(expanded, expand_tokens(DEFAULT_TEMPLATE, target, kind, when))
        final = stem + extension
        n = 0
        while not overwrite and (os.path.lexists(final) or (sidecar and os.path.lexists(final + SIDECAR_SUFFIX))):
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
    side = final + SIDECAR_SUFFIX if sidecar else None
    for existing in (final, side):
        if existing is None or not os.path.lexists(existing):
            continue
        if os.path.islink(existing) or not os.path.isfile(existing):
            raise InvalidDumpPath(f"{existing} exists and is not a regular file; choose another path", path=existing)
        if not overwrite:
            raise DumpExists(existing)
    if not os.access(directory, os.W_OK):
        why = "its filesystem is mounted read-only" if _read_only(directory) else "permission denied"
        raise InvalidDumpPath(f"cannot create {final}: {why}; choose a writable directory", path=final)
    _check_trusted(directory, raw, final)
    return Destination(final=final, temp=temp_path(directory), directory=directory, sidecar=side)


def _check_trusted(directory: str, template: str, final: str) -> None:
    """Refuse a directory another user could have steered the dump into, or could tamper with.

    dumplib runs as root in directories others can write to: a symlink planted on the way (or a
    directory planted at the dump's name) must not send the dump, and retention, elsewhere; and
    whoever owns the directory could swap our temporary between the write and the verification.
    """
    if not hasattr(os, "geteuid"):
        return  # Windows: the DACL dumplib sets on its files is what protects them
    me = os.geteuid()
    trusted = {me, 0}
    path = "/"
    for part in os.path.abspath(directory).split("/")[1:]:
        nxt = os.path.join(path, part)
        st = os.lstat(nxt)
        if stat.S_ISLNK(st.st_mode):
            parent = os.stat(path)
            # The kernel's protected_symlinks rule, applied to every directory others can write to.
            if parent.st_mode & 0o022 and st.st_uid not in (me, parent.st_uid):
                raise InvalidDumpPath(
                    f"{nxt} is a symlink owned by uid {st.st_uid} in a directory others can write to; dumplib"
                    " does not follow it (it could point anywhere). Give the real path", path=final)
            nxt = os.path.realpath(nxt)
        path = nxt
    st = os.stat(directory)
    if st.st_uid not in trusted:
        raise InvalidDumpPath(
            f"{directory} belongs to uid {st.st_uid}, who could replace or read what dumplib writes there;"
            " dump into a directory of your own (or root's)", path=final)
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise InvalidDumpPath(
            f"{directory} can be written by other users and has no sticky bit, so they could rename or replace"
            " the dump; dump into a directory only you can write to, or one with the sticky bit like /tmp",
            path=final)
    fixed = _fixed_directory(template)
    if fixed is not None:
        inside = os.path.realpath(directory)
        root = os.path.realpath(fixed)
        if inside != root and not inside.startswith(root.rstrip("/") + "/"):
            raise InvalidDumpPath(f"the path template {template} expanded to {directory}, which is outside"
                                  f" {fixed}; a name token must not lead elsewhere", path=final)


def _fixed_directory(template: str) -> Optional[str]:
    """The directory a template names before its first token, if a token sits in a directory component."""
    m = _TOKEN_RE.search(template)
    if m is None or os.sep not in template[m.start():]:
        return None
    fixed = template[: m.start()]
    return fixed if fixed.endswith(os.sep) else (os.path.dirname(fixed) or ".")


def temp_path(directory: str) -> str:
    """A fresh temporary name in *directory* (created later with O_EXCL, so a collision fails, never follows)."""
    return os.path.join(directory, f"{TEMP_PREFIX}{os.urandom(8).hex()}.tmp")


def _components(path: str) -> List[str]:
    """The path's components that move it: separators and dot-only names."""
    parts = re.split(r"[\\/]" if os.name == "nt" else "/", path)
    return [p if p in ("", ".", "..") else "x" for p in parts]


def _read_only(directory: str) -> bool:
    if sys.platform == "win32":
        return False
    return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)


def finalize_all(moves: Sequence[Tuple[str, str]], *, overwrite: bool) -> None:
    """Move each (temporary, final) pair into place, all or none: if a later one cannot be placed,
    the ones just placed are taken back (each proven to be the file this call placed) and, with
    *overwrite*, the files they replaced are put back."""
    undo: List[Tuple[str, os.stat_result, Optional[str]]] = []
    try:
        for temp, final in moves:
            st = os.lstat(temp)
            kept = _keep_aside(final) if overwrite else None
            undo.append((final, st, kept))
            _move(temp, final, overwrite)
    except BaseException as exc:
        for final, st, kept in reversed(undo):
            if kept is not None:
                os.replace(kept, final)  # the old file back (a link to it, so this never copies)
            else:
                remove_if_same(final, st)
        if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
            raise _placing_failed(exc, moves) from None
        raise
    for _final, _st, kept in undo:
        if kept is not None:
            remove_quietly(kept)


def _keep_aside(final: str) -> Optional[str]:
    """A second name (hard link) for the file *final* replaces, so a failed placement can restore it."""
    if not os.path.lexists(final):
        return None
    aside = temp_path(os.path.dirname(final))
    try:
        os.link(final, aside, follow_symlinks=False)
    except OSError:
        return None  # no hard links here: replacing stays best effort, as it always is there
    return aside


def _placing_failed(exc: OSError, moves: Sequence[Tuple[str, str]]) -> Exception:
    from .errors import DumpFailed

    names = " and ".join(final for _, final in moves)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DumpFailed(f"the disk filled up while putting {names} in place; nothing was kept", errno=exc.errno,
                          reason="disk-full")
    return DumpFailed(f"could not put {names} in place ({exc.strerror}: {exc.filename}); nothing was kept,"
                      " any file replaced was restored", errno=exc.errno)


def _move(temp: str, final: str, overwrite: bool) -> None:
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


#: link(2) errors that mean "this filesystem has no hard links" (vfat, some FUSE), not "refused".
_NO_HARD_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK)


def _link_into_place(temp: str, final: str) -> None:
    try:
        os.link(temp, final)  # atomic no-clobber, unlike rename(2)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        # No hard links here: check-then-rename is the best there is.
        if os.path.lexists(final):
            raise FileExistsError(final) from None
        os.rename(temp, final)
        return
    os.unlink(temp)


def remove_if_same(path: str, was: os.stat_result) -> bool:
    """Delete *path* only if it is still the very file *was* describes (same device and inode)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if (st.st_dev, st.st_ino) != (was.st_dev, was.st_ino) or not stat.S_ISREG(st.st_mode):
        return False
    remove_quietly(path)
    return True


@contextlib.contextmanager
def writing_in(directories: Sequence[str]) -> Iterator[List[str]]:
    """Hold every directory dumplib will write temporaries in, first removing stale temporaries
    of dumplibs that died there; yields what the caller should be told (temporaries removed, a
    directory someone else would not let us hold).

    Every dumplib holds a shared flock on each such directory while its temporaries exist; one
    that gets the lock exclusively knows no live dumplib, in any pid namespace or container
    sharing the volume, is writing there, so the temporaries left are dead ones."""
    removed: List[str] = []
    with contextlib.ExitStack() as stack:
        seen = set()
        for directory in directories:
            key = os.path.realpath(directory)
            if key in seen:
                continue
            seen.add(key)
            removed += stack.enter_context(_held(directory))
        yield removed


#: How long to wait for a shared hold on a directory someone else holds exclusively (a cleaning
#: dumplib holds it for milliseconds; anyone who can open the directory could hold it forever).
HOLD_PATIENCE = 2.0


@contextlib.contextmanager
def _held(directory: str) -> Iterator[List[str]]:
    if sys.platform == "win32":  # no flock: an open temporary cannot be deleted there anyway
        yield [f"removed a stale temporary file of a killed dumplib: {n}"
               for n in _remove_stale(directory, locked=False)]
        return
    import fcntl

    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield []
        return
    try:
        removed: List[str] = []
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass  # another dumplib is writing here: its temporaries are alive, leave them all
        else:
            removed = [f"removed a stale temporary file of a killed dumplib: {n}"
                       for n in _remove_stale(directory, locked=True)]
        deadline = time.monotonic() + HOLD_PATIENCE
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    # Never hang on someone else's lock: go on unheld. Only a cleaning dumplib of
                    # this same user could then take our temporary for a dead one.
                    removed.append(f"another process has held {directory} exclusively for {HOLD_PATIENCE:g} s;"
                                   " dumplib went on without its hold on the directory")
                    break
                time.sleep(0.02)
        yield removed
    finally:
        os.close(fd)


def _remove_stale(directory: str, *, locked: bool) -> List[str]:
    """Temporaries in *directory* no live dumplib holds: ours by owner, regular files, not links."""
    removed: List[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    uid = os.geteuid() if hasattr(os, "geteuid") else None
    for name in names:
        if not TEMP_RE.match(name):
            continue
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or (uid is not None and st.st_uid != uid):
            continue
        if not locked and time.time() - st.st_mtime < UNLOCKED_STALE_AFTER:
            continue
        if remove_if_same(path, st):
            removed.append(name)
    return removed


def remove_own(path: str) -> None:
    """Delete our temporary *path* on a failure path, only if it is a regular file of this user's:
    when its exclusive creation failed, whatever is at the name belongs to someone else."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    if stat.S_ISREG(st.st_mode) and st.st_uid == (os.geteuid() if hasattr(os, "geteuid") else st.st_uid):
        remove_quietly(path)


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        # Best effort on a failure path; the caller is already raising the real error.
        pass
