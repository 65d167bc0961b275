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
import time

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Callable, Iterator, List, Optional, Tuple, Union

from ..errors import DumpFailed, InvalidDumpPath
from .._platform import Host

#: How long to wait for a shared hold on a directory someone else holds exclusively (a cleaning
#: dumplib holds it for milliseconds; anyone who can open the directory could hold it forever).
HOLD_PATIENCE = 2.0
#: link(2) errors that mean "this filesystem has no hard links" (vfat, some FUSE), not "refused".
_NO_HARD_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK)


class LinuxHost(Host):
    def mine(self, st: os.stat_result) -> bool:
        return st.st_uid == os.geteuid()

    def open_private(self, path: str) -> int:
        return create_exclusive(path)

    def read_only(self, directory: str) -> bool:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)

    def check_trusted(self, directory: str, template: str, fixed: Optional[str], final: str) -> None:
        _check_trusted(directory, template, fixed, final)

    def place_new(self, temp: str, final: str) -> None:
        _link_into_place(temp, final)

    def hold(self, directory: str, clean: Callable[[bool], List[str]]) -> contextlib.AbstractContextManager[List[str]]:
        return _held(directory, clean)

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

    dumplib runs as root in directories others can write to: a symlink planted on the way (or a
    directory planted at the dump's name) must not send the dump, and retention, elsewhere; and
    whoever owns the directory could swap our temporary between the write and the verification.
    """
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
    if fixed is not None:
        inside = os.path.realpath(directory)
        root = os.path.realpath(fixed)
        if inside != root and not inside.startswith(root.rstrip("/") + "/"):
            raise InvalidDumpPath(f"the path template {template} expanded to {directory}, which is outside"
                                  f" {fixed}; a name token must not lead elsewhere", path=final)


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
        deadline = time.monotonic() + HOLD_PATIENCE
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    # Never hang on someone else's lock: go on unheld. Only a cleaning dumplib of
                    # this same user could then take our temporary for a dead one.
                    told.append(f"another process has held {directory} exclusively for {HOLD_PATIENCE:g} s;"
                                " dumplib went on without its hold on the directory")
                    break
                time.sleep(0.02)
        yield told
    finally:
        os.close(fd)


def create_exclusive(path: str, *, readable: bool = False) -> int:
    """Create *path* for writing: exclusive, never through a symlink, owner-only. *readable*: for reading
    too, only where the core writer maps it shared and writable (core/memory.py FileSink.prepare), which
    needs both; elsewhere write-only."""
    flags = (os.O_RDWR if readable else os.O_WRONLY) | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DumpFailed(f"cannot create {path}: the disk is full (no space or no inodes left); nothing was"
                             " written. Free space or dump to another volume", errno=exc.errno,
                             reason="disk-full") from None
        raise InvalidDumpPath(f"cannot create {path}: {exc.strerror}; choose a writable directory", path=path) from None


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
