"""sha256 of a dump while it is being written, without lengthening the target's stop.

The sidecar records the sha256 of the file as stored. Hashing a large dump afterwards costs more than
copying it did; but a writer that only ever writes at increasing offsets (the Linux core writer)
leaves every byte below the file's current size final, so a thread can read and hash behind it and
finish moments after the writer does.

While the target is stopped that thread runs nothing at all: it waits, in the kernel, until
`released()` (called as soon as the target runs again: WriteOptions.released). A hasher at full speed
during the stop stretched it by about a half (docs/benchmarks.md, "The sidecar's sha256 and the
target's stop"); one at SCHED_IDLE, as before, was taken off the CPU by any busy process, at times
holding the GIL, which the copy's thread then waited for with the target stopped (up to 1.5 s at load
10, docs/benchmarks.md, eleventh session). Most of a large dump is written once the target runs
anyway (staged in memory, or read from a snapshot). The writer never waits for the hasher.
"""
from __future__ import annotations

import errno
import io
import os
import sys
import threading

from ._bounded import start_thread

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Callable, Optional, Protocol, Union

    class Sha256(Protocol):
        """hashlib's sha256 object and the built-in one alike."""

        def update(self, data: Union[bytes, bytearray, memoryview], /) -> None: ...

        def hexdigest(self) -> str: ...

#: Read-and-hash step. The read and either sha256 (OpenSSL's; the built-in's from 2 KiB on) release the
#: GIL for a whole block (docs/benchmarks.md, "The sidecar's sha256 and the target's stop", has the
#: block sizes tried).
_BLOCK = 32 << 20


#: Below this many bytes a dump is hashed by the interpreter's own sha256 (CPython's ``_sha256``, ``_sha2``
#: from 3.12) rather than hashlib's OpenSSL one: importing hashlib loads libcrypto, ~12 M instructions
#: (~4 ms) of a small dump's start-up, while the built-in hashes ~250 MB/s against OpenSSL's ~1300
#: (SHA-NI): 3.3 ms more per MiB, so the two cost the same near 1 MiB (docs/benchmarks.md).
SMALL_HASH = 1 << 20


def new_sha256(size: Optional[int] = None) -> "Sha256":
    """A sha256 object for about *size* bytes (None: not known): the built-in one for a small input,
    hashlib's (OpenSSL) otherwise or where the interpreter has no built-in one. The digests are the same."""
    if size is not None and size <= SMALL_HASH:
        try:  # CPython's: _sha2 from 3.12 on, _sha256 before (a failed import searches all of sys.path)
            return __import__("_sha2" if sys.version_info >= (3, 12) else "_sha256").sha256()  # type: ignore[no-any-return]
        except ImportError:
            pass
    import hashlib

    return hashlib.sha256()


#: Files their writer sized before filling them (the Linux core writer's mapped output,
#: _linux/core/memory.py FileSink.prepare): (st_dev, st_ino) -> how many bytes from the start are final.
#: Such a file's size says nothing about progress, so a hasher following it goes no further than this.
#: The writer publishes an entry before it sizes the file and drops it once the file holds its final
#: size; the hasher takes the size first and looks here second, so it never sees the size without it.
frontiers: "dict[tuple[int, int], int]" = {}


#: Never through a symlink planted at the temporary name; not inherited by children.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


#: How long abandon() waits for the hashing thread (which polls for its stop every 10 ms, unless a read
#: of the file is stuck in the kernel).
ABANDON_PATIENCE = 2.0


class FollowingHasher:
    """Hash *path* as a file-order writer fills it; `result(size)` once the writer is done.

    *idle*: the target is stopped, so hash nothing until `released()`. *expected*: about how many bytes
    the writer will write (the plan's estimate; None if unknown), which picks the sha256
    implementation (new_sha256)."""

    def __init__(self, path: str, *, idle: bool = True, expected: Optional[int] = None) -> None:
        self.path = path
        self._sha = new_sha256(expected)
        self._pos = 0
        self._file: Optional[io.FileIO] = None
        self._final: Optional[int] = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        #: Set once the hasher may run: the target runs again, or the writer is done or gave up.
        self._go = threading.Event()
        if not idle:
            self._go.set()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="dumplib-sha256", daemon=True)
        start_thread(self._thread, "the thread that hashes the dump")

    @property
    def idle(self) -> bool:
        """True while the hasher waits for the target to run again."""
        return not self._go.is_set()

    def released(self) -> None:
        """The target runs again: hash from now on. Cheap; never blocks on the hasher; idempotent."""
        self._go.set()
        self._wake.set()

    def result(self, size: int, tick: Optional[Callable[[int], None]] = None) -> str:
        """The sha256 of the whole file, once the writer has finished it at *size* bytes. *tick* (the
        dump's) hears the bytes hashed every 0.25 s while the hasher catches up, and may raise (a cancel,
        a watch's end): a hasher behind a fast writer can have gigabytes to go."""
        self._final = size
        self.released()  # the writer is done, so the target is too: nothing left to protect
        self._thread.join(0.25)
        while self._thread.is_alive():
            if tick is not None:
                tick(self._pos)
            self._thread.join(0.25)
        if self._error is not None:
            raise self._error
        if self._pos != size:
            raise OSError(errno.EIO, f"hashed {self._pos} of {size} bytes of {self.path}")
        return self._sha.hexdigest()

    def abandon(self) -> None:
        """Stop hashing; waits for the thread a moment only: a read of a file whose file system has
        stopped answering (the failure being given up on) would hold the caller for as long."""
        self._stop.set()
        self.released()
        self._thread.join(ABANDON_PATIENCE)

    def _run(self) -> None:
        try:
            # In the kernel, on a lock, until the target runs: not one bytecode, so never the GIL.
            self._go.wait()
            self._follow()
        except BaseException as exc:  # reported to the caller by result()
            self._error = exc
        finally:
            self._close()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _limit(self) -> int:
        """How far the file is final: its size, or less while its writer publishes a frontier."""
        assert self._file is not None
        st = os.fstat(self._file.fileno())
        return min(st.st_size, frontiers.get((st.st_dev, st.st_ino), st.st_size))

    def _follow(self) -> None:
        while self._file is None and not self._stop.is_set():
            try:
                self._file = io.FileIO(os.open(self.path, _OPEN_FLAGS), "rb")
            except FileNotFoundError:  # the writer has not created it yet
                if self._final is not None:
                    # The writer is done, so the file exists (a hasher released only at the end
                    # gets here only now). Open it; if it is truly gone, result() says so.
                    try:
                        self._file = io.FileIO(os.open(self.path, _OPEN_FLAGS), "rb")
                    except FileNotFoundError:
                        return
                    break
                self._wake.wait(0.005)
        # Grown to what is there to read, up to _BLOCK: a zero-filled 32 MiB buffer costs more page
        # faults than a whole small dump.
        view = memoryview(bytearray(0))
        while self._file is not None and not self._stop.is_set():
            final = self._final
            limit = final if final is not None else self._limit()
            advanced = False
            while self._pos < limit and not self._stop.is_set():
                want = min(_BLOCK, limit - self._pos)
                if want > len(view):
                    view = memoryview(bytearray(min(_BLOCK, max(want, 2 * len(view)))))
                got = self._file.readinto(view[:want])  # reads on from _pos
                if not got:
                    if final is not None:  # shorter than the writer said: result() reports it
                        return
                    break
                self._sha.update(view[:got])
                self._pos += got
                advanced = True
            if final is not None and self._pos >= final:
                return
            if not advanced:
                self._wake.wait(0.01)
                self._wake.clear()
