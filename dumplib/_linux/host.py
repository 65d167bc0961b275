"""What dumplib's own files and threads need from Linux: owners and modes, flock holds on directories, link(2) placing, statvfs."""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import contextlib
import errno
import fcntl
import os
import stat
import threading
import time

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple, Union

from ..errors import DumpFailed, InvalidDumpPath
from .._platform import Host

#: How long to wait for a shared hold on a directory someone else holds exclusively (a cleaning
#: dumplib holds it for milliseconds; anyone who can open the directory could hold it forever).
HOLD_PATIENCE = 2.0
#: link(2) errors that mean "this filesystem has no hard links" (vfat, some FUSE), not "refused".
_NO_HARD_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK)
#: How long a new file waits for its own lock, which a cleaning dumplib may hold for an instant.
TEMP_LOCK_PATIENCE = 1.0
#: Symlinks followed in one path before it is refused (the kernel's MAXSYMLINKS).
_MAX_LINKS = 40
#: The files create_exclusive made in this process that may still be at their names: path -> (a descriptor
#: of the file holding its flock exclusively, (st_dev, st_ino)). A cleaning dumplib that got the directory's
#: lock (ours could not be had: someone else held it) still finds each live temporary locked; the kernel
#: lets go of a killed writer's. Released once the name no longer holds that file (_let_go_of_gone).
_live_files: Dict[str, Tuple[int, Tuple[int, int]]] = {}
_live_files_lock = threading.Lock()
#: Temporaries whose look got no answer (their file system stopped answering): left out of later looks.
_unanswered: Set[str] = set()


class LinuxHost(Host):
    def release_gone(self) -> None:
        _let_go_of_gone(unanswered_too=True)

    def forget(self, path: str) -> None:
        _forget_live(path)

    def reader_gone(self, fd: int) -> bool:
        # poll(2) reports POLLERR on a pipe's writing end once no reader is left (review: a dump to
        # `| head -c 0` stopped its target 0.84 s for nothing before its first write failed).
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        import select

        p = select.poll()
        p.register(fd, select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in p.poll(0))

    def mine(self, st: os.stat_result, path: Optional[str] = None) -> bool:
        return st.st_uid == os.geteuid()

    def open_private(self, path: str) -> int:
        return create_exclusive(path)

    def read_only(self, directory: str) -> bool:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)

    def name_max(self, directory: str) -> Optional[int]:
        try:
            most = os.pathconf(directory, "PC_NAME_MAX")
        except (OSError, ValueError):
            return None
        return most if most > 0 else None  # -1: no limit said

    def check_trusted(self, directory: str, template: str, fixed: Optional[str], final: str) -> None:
        _check_trusted(directory, template, fixed, final)

    def place_new(self, temp: str, final: str) -> None:
        _link_into_place(temp, final)
        _forget_live(temp)

    def hold(self, directory: str, clean: Callable[[bool], List[str]]) -> contextlib.AbstractContextManager[List[str]]:
        return _held(directory, clean)

    def temp_in_use(self, path: str, st: os.stat_result) -> Optional[bool]:
        return _temp_in_use(path, st)

    def appending(self, fd: int) -> bool:
        return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND)

    def make_owner_only(self, fd: int) -> bool:
        os.fchmod(fd, 0o600)
        return True

    def binary(self, fd: int) -> None:
        pass  # no text mode on Linux

    def disk_bytes(self, st: os.stat_result) -> Optional[int]:
        return st.st_blocks * 512

    def usage(self, volume: Union[str, int]) -> Tuple[int, int]:
        st = os.statvfs(volume)  # a path or a descriptor alike
        return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def _check_trusted(directory: str, template: str, fixed: Optional[str], final: str) -> None:
    """Refuse a directory another user could have steered the dump into, or could tamper with.

    dumplib runs as root in directories others can write to: whoever can rename an entry on the way
    (a directory they own, or can write to without the sticky bit, or their own entry in a sticky
    one) could swap it for a symlink, before or during the dump, and send the dump and retention
    (which deletes) elsewhere; and whoever owns the final directory could swap our temporary
    between the write and the verification.
    """
    trusted = {os.geteuid(), 0}
    resolved = _walk_trusted(os.path.abspath(directory), trusted, final)
    st = os.stat(resolved)
    if st.st_uid not in trusted:
        raise InvalidDumpPath(
            f"{directory} belongs to uid {st.st_uid}, who could replace or read what dumplib writes there;"
            " dump into a directory of your own (or root's)", path=final)
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise InvalidDumpPath(
            f"{directory} can be written by other users and has no sticky bit, so they could rename or replace"
            " the dump; dump into a directory only you can write to, or one with the sticky bit like /tmp",
            path=final)
    if fixed is not None:
        inside = resolved
        root = os.path.realpath(fixed)
        if inside != root and not inside.startswith(root.rstrip("/") + "/"):
            raise InvalidDumpPath(f"the path template {template} expanded to {directory}, which is outside"
                                  f" {fixed}; a name token must not lead elsewhere", path=final)


def _walk_trusted(path: str, trusted: Set[int], final: str) -> str:
    """*path* resolved component by component as the kernel will (symlinks followed, their targets
    walked by the same rule), each entry on the way checked to be one no untrusted user can rename or
    replace: its directory trusted-owned and either writable only by its owner, or sticky with the
    entry trusted-owned. Returns the real path."""
    todo = [p for p in reversed(path.split("/")) if p]  # a stack: the next component last
    here = "/"
    links = 0
    while todo:
        part = todo.pop()
        if part == ".":
            continue
        if part == "..":
            here = os.path.dirname(here)  # *here* holds no symlink: its parent is its lexical parent
            continue
        entry = os.path.join(here, part)
        try:
            parent = os.lstat(here)
            st = os.lstat(entry)
        except OSError as exc:
            raise InvalidDumpPath(f"{entry} cannot be looked at ({exc.strerror}) while checking the way to the"
                                  " dump; choose an existing directory", path=final) from None
        why = _replaceable(here, parent, entry, st, trusted)
        if why is not None:
            raise InvalidDumpPath(
                f"{why}, so they could replace it with a symlink (or re-point it), before or during the dump,"
                " and steer the dump and retention (which deletes old dumps) anywhere. Dump into a path whose"
                " every directory belongs to root or you and only its owner can write (or is sticky, like /tmp,"
                " holding your own or root's directory)", path=final)
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_LINKS:
                raise InvalidDumpPath(f"{path} goes through more than {_MAX_LINKS} symlinks; give the real path",
                                      path=final)
            target = os.readlink(entry)
            todo += [p for p in reversed(target.split("/")) if p]
            if target.startswith("/"):
                here = "/"
            continue
        here = entry
    return here


def _replaceable(here: str, parent: os.stat_result, entry: str, st: os.stat_result, trusted: Set[int]) -> Optional[str]:
    """Who could rename or replace *entry* (*st*) in the directory *here* (*parent*), or None if no
    untrusted user can: the directory's owner always can; others with write access can, unless the
    sticky bit limits that to the entry's own owner."""
    if parent.st_uid not in trusted:
        return f"{entry} is on the way to the dump and its directory {here} belongs to uid {parent.st_uid}"
    if not parent.st_mode & 0o022:
        return None
    if not parent.st_mode & stat.S_ISVTX:
        return (f"{entry} is on the way to the dump and its directory {here} (owner uid {parent.st_uid}, mode"
                f" {stat.S_IMODE(parent.st_mode):o}) can be written by other users and has no sticky bit")
    if st.st_uid not in trusted:
        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "a directory" if stat.S_ISDIR(st.st_mode) else "an entry"
        return (f"{entry} is {what} owned by uid {st.st_uid} in {here}, a sticky directory others can write to;"
                f" uid {st.st_uid} may rename it there")
    return None


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


@contextlib.contextmanager
def _held(directory: str, clean: Callable[[bool], List[str]]) -> Iterator[List[str]]:
    """A shared flock on *directory* for as long as the caller's temporaries live there; first, if
    the lock can be had exclusively (no live dumplib, in any pid namespace or container sharing
    the volume, writes there), *clean(True)* removes the dead ones."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield []
        return
    try:
        told: List[str] = []
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass  # another dumplib is writing here: its temporaries are alive, leave them all
        else:
            told = clean(True)
        # Never hang on someone else's lock: go on unheld. Our temporaries' own locks
        # (create_exclusive) keep a cleaning dumplib from taking them for dead ones.
        try:
            if not _flock_within(fd, fcntl.LOCK_SH, HOLD_PATIENCE, 0.02):
                told.append(f"another process has held {directory} exclusively for {HOLD_PATIENCE:g} s;"
                            " dumplib went on without its hold on the directory")
        except OSError as exc:
            told.append(f"{directory} cannot be locked ({exc.strerror}); dumplib went on without its hold on it")
        yield told
    finally:
        os.close(fd)
        _let_go_of_gone()  # the temporaries made while held are placed or removed by now


def _lock_while_alive(path: str, fd: int) -> None:
    """Hold an exclusive flock on the new file *fd* (at *path*) until its name no longer holds it, on a
    descriptor of our own: the caller may close *fd* long before the file is placed or removed. (A
    cleaner can only find the file unlocked in the moment before: placement.STALE_AFTER covers that.)"""
    _let_go_of_gone()
    try:
        # Read-only, not a dup of *fd*: the file's last writable descriptor still closes when the writer
        # closes *fd* (IN_CLOSE_WRITE then, not at placement).
        keep = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        st = os.fstat(keep)
        if (st.st_dev, st.st_ino) != (os.fstat(fd).st_dev, os.fstat(fd).st_ino):
            raise OSError(errno.ESTALE, "not the file just created")
        # A cleaning dumplib may hold it an instant to see whether it is free (_temp_in_use), and then
        # finds it too young to remove (placement.STALE_AFTER): wait that out.
        if not _flock_within(keep, fcntl.LOCK_EX, TEMP_LOCK_PATIENCE, 0.005):
            raise OSError(errno.EWOULDBLOCK, "held by another")
    except OSError:
        os.close(keep)  # no flock here (or held on): the directory's hold and the age rule stand alone
        return
    with _live_files_lock:
        old = _live_files.pop(path, None)
        _live_files[path] = (keep, (st.st_dev, st.st_ino))
    if old is not None:
        os.close(old[0])


def _flock_within(fd: int, operation: int, seconds: float, step: float) -> bool:
    """flock(*fd*, *operation*) without ever blocking, tried again every *step* for up to *seconds*: True
    once had, False if another holder still has it then; any other error (no flock here) is raised at once."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(step)


#: How long the look at whether a temporary is still at its name may wait on its file system.
LIVE_LOOK_SECONDS = 1.0


def _forget_live(path: str) -> None:
    """Release the lock kept on our temporary *path* if that name no longer holds it: just removed or
    placed by this process, whose file system answered that very call (the look is inline for that)."""
    with _live_files_lock:
        entry = _live_files.get(path)
    if entry is None:
        return
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == entry[1]:
            return  # still there (its removal failed): kept locked, as a live temporary
    except OSError:
        pass
    _drop_live(path, entry[0])


def _drop_live(path: str, keep: int) -> None:
    """Stop holding the lock on *path*, gone from its name, if *keep* is still its descriptor: out of the
    registry, and closed. The close is never raised: it follows a placement (a FUSE close's flush can
    fail) or a failure path's removal, neither of which a failed close of a read-only lock descriptor
    must undo or retell, nor a later dump's creation (_let_go_of_gone runs first there)."""
    with _live_files_lock:
        _unanswered.discard(path)
        if _live_files.get(path, (None,))[0] != keep:
            return
        del _live_files[path]
    with contextlib.suppress(OSError):
        os.close(keep)


def _let_go_of_gone(unanswered_too: bool = False) -> None:
    """Release the locks of the files no longer at the names they were made under (placed, removed).

    The looks are bounded (one thread for all of them) and made outside the registry's lock: a
    temporary on a file system that has stopped answering (a dump given up on as output-stalled) must
    hold neither this dump nor any other of this process. Such a file is taken as still there, its
    lock kept (its descriptor's close would wait on that file system too), and left out of later looks
    (each would wait the bound again) until *unanswered_too*: its late removal has just answered."""
    with _live_files_lock:
        entries = [(path, entry) for path, entry in _live_files.items()
                   if unanswered_too or path not in _unanswered]
    if not entries:
        return
    from .._bounded import call_within, unanswered

    looked: List[str] = []

    def look() -> List[Tuple[str, int]]:
        gone = []
        for path, (keep, ident) in entries:
            looked.append(path)
            try:
                st = os.lstat(path)
                if (st.st_dev, st.st_ino) == ident:
                    continue
            except OSError:
                pass
            gone.append((path, keep))
        return gone

    try:
        gone = call_within(look, LIVE_LOOK_SECONDS)
    except Exception as exc:  # or no thread to look in (a pids limit): looked at again the next time
        if not unanswered(exc):
            raise
        if looked:  # none when no thread could be had to look in: all are looked at again next time
            with _live_files_lock:
                _unanswered.add(looked[-1])  # the look that got no answer; those before it are looked at again
        return
    for path, keep in gone:
        _drop_live(path, keep)


def _temp_in_use(path: str, st: os.stat_result) -> Optional[bool]:
    """Whether the writer of our temporary *path* (*st*) still holds the flock create_exclusive took on it:
    True while it lives (in any process, pid namespace or container sharing the volume), False once the
    kernel let go of it; None when the file cannot be looked at or locked (no flock here)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return None  # another file at the name since: judged at the next cleaning
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return None
        return False
    finally:
        os.close(fd)  # lets go of the lock just taken, if any


def create_exclusive(path: str, *, readable: bool = False) -> int:
    """Create *path* for writing: exclusive, never through a symlink, owner-only, flocked for as long as it
    is at that name (_lock_while_alive). *readable*: for reading too, only where the core writer maps it
    shared and writable (core/memory.py FileSink.prepare), which needs both; elsewhere write-only."""
    flags = (os.O_RDWR if readable else os.O_WRONLY) | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DumpFailed(f"cannot create {path}: the disk is full (no space or no inodes left); nothing was"
                             " written. Free space or dump to another volume", errno=exc.errno,
                             reason="disk-full") from None
        raise InvalidDumpPath(f"cannot create {path}: {exc.strerror}; choose a writable directory", path=path) from None
    _lock_while_alive(path, fd)
    return fd


def write_new_file(path: str, data: bytes, mode: int = 0o600, *, replace: bool = False,
                   owner: Optional[Tuple[int, int]] = None) -> None:
    """*path* holding *data*, made whole under a temporary name (exclusive, never through a symlink,
    *mode*, *owner*, fsynced) and renamed into place, so no reader ever sees it half written; unless
    *replace*, FileExistsError when something is at *path*."""
    temp = f"{path}.{os.urandom(6).hex()}.new"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(temp)
        raise
    os.close(fd)
    if replace:
        os.rename(temp, path)
        return
    try:
        os.link(temp, path, follow_symlinks=False)  # fails if anything is at path, even a dangling symlink
    finally:
        os.unlink(temp)
