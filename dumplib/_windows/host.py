"""What dumplib's own files and threads need from Windows: no owners or modes in stat (the DACL protects), no flock, rename placing."""
from __future__ import annotations

import sys

if sys.platform != "win32":  # survives python -O, unlike the assert below
    raise ImportError(f"{__name__} is Windows only")
assert sys.platform == "win32"  # tells type checkers on other platforms to skip this module

import contextlib
import secrets
import ctypes
import os
import types
from typing import Callable, Iterator, List, Optional, Tuple, Union

from .._platform import Host
from ..errors import DumpError
from . import kernel32, wrappers
from ._common import Win32Error


class WindowsHost(Host):
    owners_known = False

    def mine(self, st: os.stat_result, path: Optional[str] = None) -> bool:
        """stat names no owner here (st_uid is always 0): the file at *path* is opened without following
        a reparse point and its owner read from that handle (private.owned_here). Without *path* there
        is nothing to judge by, and a file not proven this user's is never deleted: False."""
        if path is None:
            return False
        from .private import owned_here

        return owned_here(path, st)

    def open_private(self, path: str) -> int:
        import msvcrt

        handle = wrappers.create_new_file(path)
        try:
            return msvcrt.open_osfhandle(handle, os.O_WRONLY | getattr(os, "O_BINARY", 0))
        except OSError:
            wrappers.close_handle(handle)
            raise

    def open_secret(self, path: str) -> int:
        """Open *path* for reading, a reparse point itself rather than where it leads (secret_problem refuses it)."""
        import msvcrt

        from .private import open_no_follow

        try:
            handle = open_no_follow(path)
        except Win32Error as exc:
            raise ctypes.WinError(exc.winerror) from None  # an OSError: FileNotFoundError for a missing file
        try:
            return msvcrt.open_osfhandle(handle, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError:
            wrappers.close_handle(handle)
            raise

    def secret_problem(self, fd: int) -> Optional[str]:
        """The opened file's type, owner and DACL, judged by private.py's rule."""
        import msvcrt

        from .private import handle_problem

        try:
            return handle_problem(msvcrt.get_osfhandle(fd))
        except Win32Error as exc:
            return f"cannot be judged ({exc.message})"  # refused: a secret nobody could check is not used

    def private_directory_problem(self, path: str) -> Optional[str]:
        from .private import directory_problem

        return directory_problem(path)

    def scratch_usable(self, directory: str) -> bool:
        """Fit to hold a raw dump: a fixed local volume that keeps ACLs, and a file can be created there."""
        if not wrappers.volume_keeps_private_files(directory):
            return False
        probe = os.path.join(directory, f".dumplib-{os.getpid()}-{secrets.token_hex(4)}.probe.tmp")
        try:
            wrappers.close_handle(wrappers.create_new_file(probe))
        except (DumpError, OSError):  # Win32Error and InvalidDumpPath are DumpErrors
            return False
        os.remove(probe)  # ours: created just now with CREATE_NEW
        return True

    def read_only(self, directory: str) -> bool:
        return False  # a read-only volume shows as an access error when the file is created

    def check_trusted(self, directory: str, template: str, fixed: Optional[str], final: str) -> None:
        pass  # the DACL dumplib sets on its files is what protects them

    def place_new(self, temp: str, final: str) -> None:
        from .inflight import TEMPORARIES

        os.rename(temp, final)  # MoveFileEx without REPLACE_EXISTING: FileExistsError rather than replacing
        TEMPORARIES.discard(temp)  # placed: a console close has nothing of it to wait for

    def hold(self, directory: str, clean: Callable[[bool], List[str]]) -> contextlib.AbstractContextManager[List[str]]:
        return _unheld(clean)

    def appending(self, fd: int) -> bool:
        return False  # a Windows handle has no O_APPEND to ask about; the position says it

    def make_owner_only(self, fd: int) -> bool:
        return False  # a mode cannot do it; the file keeps the DACL it was created with

    def binary(self, fd: int) -> None:
        import msvcrt

        msvcrt.setmode(fd, os.O_BINARY)  # a text-mode fd would turn every \n byte of the dump into \r\n

    def disk_bytes(self, st: os.stat_result) -> Optional[int]:
        return None  # no st_blocks

    def usage(self, volume: Union[str, int]) -> Tuple[int, int]:
        # FreeBytesAvailableToCaller: NTFS quotas count; psutil's free does not.
        return wrappers.disk_space(volume if isinstance(volume, str) else _directory_of(volume))



def _directory_of(fd: int) -> str:
    """The directory holding the file open as *fd*, as a path free-space calls take (no \\\\?\\ prefix)."""
    import msvcrt

    path = ctypes.create_unicode_buffer(32768)  # the longest path Windows has
    kernel32.GetFinalPathNameByHandleW(msvcrt.get_osfhandle(fd), path, len(path), 0)
    name = path.value
    if name.startswith("\\\\?\\UNC\\"):
        name = "\\\\" + name[8:]
    elif name.startswith("\\\\?\\"):
        name = name[4:]
    return os.path.dirname(name)


@contextlib.contextmanager
def _unheld(clean: Callable[[bool], List[str]]) -> Iterator[List[str]]:
    """No flock on Windows: an open temporary cannot be deleted there anyway, so only old ones go."""
    yield clean(False)


def import_psutil() -> types.ModuleType:
    """psutil, leaving this process's token as it found it.

    psutil's Windows module enables SeDebugPrivilege for the whole process when it is imported and
    never disables it: a library caller, and every child it starts, would be left holding the very
    privilege EDR products watch for. The import runs inside the counted hold dumps share, so its
    end restores the token only when no dump on another thread still holds the privilege."""
    if "psutil" in sys.modules:
        return sys.modules["psutil"]
    with wrappers.DEBUG_PRIVILEGE.held():
        import psutil
    return psutil
