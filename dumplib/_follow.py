"""sha256 of a dump while it is being written, on another core.

The sidecar records the sha256 of the file as stored. Hashing 2 GiB afterwards costs more than
copying it did; but a writer that only ever writes at increasing offsets (the Linux core writer)
leaves every byte below the file's current size final, so a thread can read and hash behind it and
finish moments after the writer does. The target's stop is not lengthened: the writer never waits
for the hasher.
"""
from __future__ import annotations

import errno
import hashlib
import os
import threading
from typing import Optional

_BLOCK = 4 << 20


class FollowingHasher:
    def __init__(self, path: str) -> None:
        self.path = path
        self._sha = hashlib.sha256()
        self._pos = 0
        self._final: Optional[int] = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="dumplib-sha256", daemon=True)
        self._thread.start()

    def result(self, size: int) -> str:
        """The sha256 of the whole file, once the writer has finished it at *size* bytes."""
        self._final = size
        self._wake.set()
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._pos != size:
            raise OSError(errno.EIO, f"hashed {self._pos} of {size} bytes of {self.path}")
        return self._sha.hexdigest()

    def abandon(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        fd = None
        try:
            while fd is None and not self._stop.is_set():
                try:
                    fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                except FileNotFoundError:  # the writer has not created it yet
                    if self._final is not None:
                        return
                    self._wake.wait(0.005)
            while fd is not None and not self._stop.is_set():
                final = self._final
                limit = final if final is not None else os.fstat(fd).st_size
                advanced = False
                while self._pos < limit and not self._stop.is_set():
                    block = os.pread(fd, min(_BLOCK, limit - self._pos), self._pos)
                    if not block:
                        break
                    self._sha.update(block)
                    self._pos += len(block)
                    advanced = True
                if final is not None and self._pos >= final:
                    return
                if not advanced:
                    self._wake.wait(0.01)
                    self._wake.clear()
        except BaseException as exc:  # reported to the caller by result()
            self._error = exc
        finally:
            if fd is not None:
                os.close(fd)
