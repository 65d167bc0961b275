"""Where the dump goes: its name (tokens, a safe {name}), its temporaries, and how it is placed: no clobbering, all or nothing."""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import time

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    import re
    from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from ._accel import datetime  # _datetime: the same classes, without the datetime module's start-up
from ._platform import Host
from ._record import record, replace
from .errors import DumpExists, InvalidDumpPath
from .kinds import DumpKind
from .results import ProcessInfo

__all__ = ["Destination", "plan_destination", "expand_tokens", "finalize_all", "remove_quietly", "TEMP_PREFIX",
           "temp_path", "writing_in", "SIDECAR_SUFFIX"]

#: Temporary files are ``.dumplib-<16 hex>.tmp``: short, so any legal final name is legal beside it,
#: and unguessable, so nothing can be planted at the name before dumplib creates it (O_EXCL anyway).
TEMP_PREFIX = ".dumplib-"
_TEMP_NAME = r"\.dumplib-[0-9a-f]{16}\.tmp"
#: ``<dump>.json``: the sidecar's name is the dump's plus this.
SIDECAR_SUFFIX = ".json"
#: Where directories cannot be locked (no flock), a temporary is stale only once untouched this long.
UNLOCKED_STALE_AFTER = 24 * 3600.0
#: Even with the directory held alone and the temporary unlocked, one touched this recently is left: its
#: writer may be between creating it and taking its lock (Host.temp_in_use).
STALE_AFTER = 10.0
#: Longest {name} expansion: process names are the process's own choice.
NAME_MAX_CHARS = 64

DEFAULT_TEMPLATE = "{name}_{pid}_{date}_{time}"

# ProcDump's upper-case tokens, replaced only as whole words so "PIDGIN" or "C:\PIDS" survive.
_PROCDUMP_TOKENS = {"PROCESSNAME": "name", "PID": "pid", "YYMMDD": "date", "HHMMSS": "time", "EXCEPTIONCODE": "event"}
_BRACED = ("name", "pid", "date", "time", "kind", "event")
_TOKEN = (r"\{(" + "|".join(_BRACED) + r")\}"
          r"|(?<![A-Za-z0-9])(" + "|".join(_PROCDUMP_TOKENS) + r")(?![A-Za-z0-9])")
_token_re: Optional["re.Pattern[str]"] = None
_EVENT_TOKEN = r"\{event\}|(?<![A-Za-z0-9])EXCEPTIONCODE(?![A-Za-z0-9])"
#: ``{event}`` / EXCEPTIONCODE in a dump not taken at a signal, an exception or by a trigger.
NO_EVENT = "NONE"

if TYPE_CHECKING:
    PathLike = Union[str, os.PathLike[str]]  # not the quoted "os.PathLike[str]": a ForwardRef compiles its text at import (~4 ms)
else:  # a type alias: at run time only its name (dumplib/_typing.py)
    PathLike = object


@record(frozen=True)
class Destination:
    """Where a dump goes: its final name, the temporary it is written under, and its sidecar's name."""

    final: str
    temp: str
    directory: str
    #: ``<final>.json`` when a sidecar will be written beside the dump.
    sidecar: Optional[str] = None
    #: For a name dumplib chose itself (a directory was given): the name before its extension and the
    #: extension, so a name another dump took meanwhile can give way to the next free one.
    chosen: Optional[Tuple[str, str]] = None

    def next_free(self) -> "Destination":
        """The same destination under the next ``-N`` name neither the dump nor its sidecar holds now."""
        assert self.chosen is not None, "only a name dumplib chose may change"
        stem, extension = self.chosen
        n = 1
        while True:
            final = f"{stem}-{n}{extension}"
            side = final + SIDECAR_SUFFIX if self.sidecar is not None else None
            if not os.path.lexists(final) and (side is None or not os.path.lexists(side)):
                return replace(self, final=final, sidecar=side)
            n += 1


def _letter_or_digit(ch: str) -> bool:
    """A character outside ASCII that is a letter or digit and printable (unicodedata: loaded only for one)."""
    import unicodedata

    return ch.isprintable() and unicodedata.category(ch)[0] in "LN"


def _safe_name(name: str) -> str:
    """A process name made into one harmless file-name component.

    The name is chosen by the process (comm, argv[0]) and may hold separators, ``..``, control
    characters or bytes that are not text: keep letters, digits and ``-_.+``, replace the rest,
    and never start with a dot (no hidden files, no ``.``/``..``)."""
    if name.lower().endswith(".exe"):
        name = name[:-4]
    out = []
    for ch in name[:NAME_MAX_CHARS]:
        # An ASCII letter or digit is printable and of category L or N: no unicodedata for it.
        ok = ch in "-_.+" or (ch.isalnum() and (ch.isascii() or _letter_or_digit(ch)))
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
    # Both spellings hold these words: a path without them is left as it is, its pattern not compiled.
    if "{event}" not in text and "EXCEPTIONCODE" not in text:
        return path
    import re  # only here and for the patterns below: re's import and a compile are start-up every dump pays

    if not re.search(_EVENT_TOKEN, text):
        return path
    value = _safe_name(label)
    return re.sub(_EVENT_TOKEN, lambda m: value, text)


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
    if not _has_procdump_word(text):
        return _expand_braced(text, values)
    # One pass over both spellings: a value put in (a process named "PID") is never expanded again.
    return _token_pattern().sub(lambda m: values[m.group(1) or _PROCDUMP_TOKENS[m.group(2)]], text)


def _token_pattern() -> "re.Pattern[str]":
    """_TOKEN, compiled at the first text that holds a ProcDump word: a compile at import, or for the
    ``{name}`` tokens alone, is start-up every dump pays."""
    global _token_re
    if _token_re is None:
        import re

        _token_re = re.compile(_TOKEN)
    return _token_re


def _has_procdump_word(text: str) -> bool:
    """Whether *text* holds a ProcDump token's word anywhere (as a whole word or not): only then can
    _TOKEN's second branch match, and only then is the pattern needed."""
    return any(word in text for word in _PROCDUMP_TOKENS)


def _expand_braced(text: str, values: Dict[str, str]) -> str:
    """_TOKEN's substitution for a text without ProcDump words, where only its first branch, the
    literal ``{name}``... tokens, can match: found left to right, each value put in never scanned again."""
    parts: List[str] = []
    done = 0
    at = text.find("{")
    while at >= 0:
        close = text.find("}", at + 1)
        if close < 0:
            break
        if text[at + 1 : close] in _BRACED:
            parts += (text[done:at], values[text[at + 1 : close]])
            done = close + 1
            at = text.find("{", done)
        else:
            at = text.find("{", at + 1)
    parts.append(text[done:])
    return "".join(parts)


def first_token_at(text: str) -> Optional[int]:
    """Where the first name token of *text* starts (as expand_tokens finds them), or None."""
    if _has_procdump_word(text):
        m = _token_pattern().search(text)
        return m.start() if m else None
    return min((at for at in (text.find("{" + name + "}") for name in _BRACED) if at >= 0), default=None)


def plan_destination(
    path: Optional[PathLike],
    target: ProcessInfo,
    kind: DumpKind,
    *,
    overwrite: bool,
    extension: str,
    when: Optional[datetime.datetime] = None,
    sidecar: bool = False,
    host: Host,
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
        chosen: Optional[Tuple[str, str]] = (os.path.abspath(stem), extension)
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
        final, chosen = expanded, None
    final = os.path.abspath(final)
    directory = os.path.dirname(final)
    if not os.path.isdir(directory):
        raise InvalidDumpPath(
            f"directory {directory} does not exist; create it first or choose another path"
            " (dumplib never creates directories)",
            path=final,
        )
    side = final + SIDECAR_SUFFIX if sidecar else None
    _check_name_lengths(directory, final, side, raw, host.name_max(directory))
    for existing in (final, side):
        if existing is None or not os.path.lexists(existing):
            continue
        if os.path.islink(existing) or not os.path.isfile(existing):
            raise InvalidDumpPath(f"{existing} exists and is not a regular file; choose another path", path=existing)
        if not overwrite:
            raise DumpExists(existing)
    if not os.access(directory, os.W_OK):
        why = "its filesystem is mounted read-only" if host.read_only(directory) else "permission denied"
        raise InvalidDumpPath(f"cannot create {final}: {why}; choose a writable directory", path=final)
    host.check_trusted(directory, raw, _fixed_directory(raw), final)
    return Destination(final=final, temp=temp_path(directory), directory=directory, sidecar=side, chosen=chosen)


def _check_name_lengths(directory: str, final: str, side: Optional[str], template: str, most: Optional[int]) -> None:
    """Refuse, before the target is touched, a dump or sidecar name longer than *most* bytes (what
    *directory*'s file system allows, None: not known): found only at placement, it would cost a whole
    stop and write for nothing. (The temporaries' names are short, see TEMP_PREFIX; but a file system
    allowing less than theirs is refused too.)"""
    if most is None:
        return
    for what, path in (("the dump's", final), ("its sidecar's", side), ("a temporary's", TEMP_PREFIX + "0" * 16 + ".tmp")):
        if path is None:
            continue
        size = len(os.fsencode(os.path.basename(path)))
        if size > most:
            expanded = f" once {template} was expanded" if first_token_at(template) is not None else ""
            hint = ", or write no sidecar (--no-sidecar)" if what == "its sidecar's" else ""
            raise InvalidDumpPath(f"cannot create {final}: {what} name is {size} bytes"
                                  f"{expanded}, and {directory} allows at most {most}; nothing was dumped."
                                  f" Choose a shorter name{hint}", path=final)


def _fixed_directory(template: str) -> Optional[str]:
    """The directory a template names before its first token, if a token sits in a directory component."""
    at = first_token_at(template)
    if at is None or os.sep not in template[at:]:
        return None
    fixed = template[:at]
    return fixed if fixed.endswith(os.sep) else (os.path.dirname(fixed) or ".")


def temp_path(directory: str) -> str:
    """A fresh temporary name in *directory* (created later with O_EXCL, so a collision fails, never follows)."""
    return os.path.join(directory, f"{TEMP_PREFIX}{os.urandom(8).hex()}.tmp")


def _components(path: str) -> List[str]:
    """The path's components that move it: separators and dot-only names."""
    parts = (path.replace(os.altsep, os.sep) if os.altsep else path).split(os.sep)  # not re.split: a compile per call
    return [p if p in ("", ".", "..") else "x" for p in parts]


def finalize_all(moves: Sequence[Tuple[str, str]], *, overwrite: bool, host: Host) -> None:
    """Move each (temporary, final) pair into place, all or none: if a later one cannot be placed,
    the ones just placed are taken back (each proven to be the file this call placed) and, with
    *overwrite*, the files they replaced are put back."""
    undo: List[Tuple[str, os.stat_result, Optional[str]]] = []
    at = moves[0] if moves else ("", "")
    try:
        for temp, final in moves:
            at = (temp, final)
            st = os.lstat(temp)
            kept = _keep_aside(final) if overwrite else None
            undo.append((final, st, kept))
            _move(temp, final, overwrite, host)
    except BaseException as exc:
        for final, st, kept in reversed(undo):
            if kept is not None:
                os.replace(kept, final)  # the old file back (a link to it, so this never copies)
            else:
                remove_if_same(final, st)
        if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
            raise _placing_failed(exc, moves, at) from None
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


def _placing_failed(exc: OSError, moves: Sequence[Tuple[str, str]], at: Tuple[str, str]) -> Exception:
    """The error for *exc*, met while moving the temporary at[0] to at[1]: named by the file the caller
    asked for (the OSError names whichever path the call took first, often our temporary)."""
    from .errors import DumpFailed

    names = " and ".join(final for _, final in moves)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DumpFailed(f"the disk filled up while putting {names} in place; nothing was kept", errno=exc.errno,
                          reason="disk-full")
    temp, final = at
    return DumpFailed(f"could not put {names} in place: {final}: {exc.strerror} (moving its temporary {temp}"
                      " there); nothing was kept, any file replaced was restored", errno=exc.errno)


def _move(temp: str, final: str, overwrite: bool, host: Host) -> None:
    if overwrite:
        os.replace(temp, final)
        host.forget(temp)  # its lock let go now, as place_new does
        return
    try:
        host.place_new(temp, final)
    except FileExistsError:
        raise DumpExists(final) from None


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
def writing_in(directories: Sequence[str], host: Host) -> Iterator[List[str]]:
    """Hold every directory dumplib will write temporaries in, first removing stale temporaries
    of dumplibs that died there; yields what the caller should be told (temporaries removed, a
    directory someone else would not let us hold).

    Every dumplib holds each such directory while its temporaries exist (Linux: a shared flock); one
    that holds it alone knows no live dumplib, in any pid namespace or container sharing the
    volume, is writing there, so the temporaries left are dead ones (see Host.hold)."""
    removed: List[str] = []
    with contextlib.ExitStack() as stack:
        seen = set()
        for directory in directories:
            key = os.path.realpath(directory)
            if key in seen:
                continue
            seen.add(key)
            removed += stack.enter_context(_held(directory, host))
        yield removed


def is_temp_name(name: str) -> bool:
    """Whether *name* is one of dumplib's temporary file names (``.dumplib-<16 hex>.tmp``)."""
    # The pattern is compiled (and cached by re) only for a name with the prefix: each pattern compiled
    # at import is start-up every dump pays.
    if not name.startswith(TEMP_PREFIX):
        return False
    import re

    return re.fullmatch(_TEMP_NAME, name) is not None


def _held(directory: str, host: Host) -> "contextlib.AbstractContextManager[List[str]]":
    def clean(locked: bool) -> List[str]:
        return [f"removed a stale temporary file of a killed dumplib: {n}" for n in _remove_stale(directory, host, locked=locked)]

    return host.hold(directory, clean)


def _remove_stale(directory: str, host: Host, *, locked: bool) -> List[str]:
    """Temporaries in *directory* no live dumplib holds: ours by owner, regular files, not links, their
    own locks free (Host.temp_in_use) and untouched for STALE_AFTER seconds."""
    removed: List[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not is_temp_name(name):
            continue
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or not host.mine(st, path):
            continue
        age = time.time() - st.st_mtime
        if not locked and age < UNLOCKED_STALE_AFTER:
            continue
        # The directory held alone is not proof enough: a dumplib someone kept from its hold writes on
        # unheld, and its temporary is alive while its own lock is held.
        in_use = host.temp_in_use(path, st)
        if in_use or age < STALE_AFTER or (in_use is None and age < UNLOCKED_STALE_AFTER):
            continue
        if remove_if_same(path, st):
            removed.append(name)
    return removed


def remove_own(path: str, host: Host) -> None:
    """Delete our temporary *path* on a failure path, only if it is a regular file of this user's:
    when its exclusive creation failed, whatever is at the name belongs to someone else."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    if stat.S_ISREG(st.st_mode) and host.mine(st, path):
        remove_quietly(path)


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        # Best effort on a failure path; the caller is already raising the real error.
        pass

