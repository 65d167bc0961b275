"""sha256 of a dump while it is being written, without lengthening the target's stop.

The sidecar records the sha256 of the file as stored. Hashing a large dump afterwards costs more than
copying it did; but a writer that only ever writes at increasing offsets (the Linux core writer)
leaves every byte below the file's current size final, so a thread can read and hash behind it and
finish moments after the writer does.

While the target is stopped, that thread must not take CPU, memory bandwidth or page-cache work from
the writer: a full-speed hasher stretches the stop by about a half (docs/benchmarks.md, "The
sidecar's sha256 and the target's stop"). So it
starts at SCHED_IDLE (it runs only on a core nothing else wants), and `released()` (called once the
target runs again) puts it back to normal priority. Leaving SCHED_IDLE needs CAP_SYS_NICE; without
it the idle thread stops at its next block and a new thread, at the caller's priority, carries on
from there. The writer never waits for the hasher.
"""
from __future__ import annotations

import errno
import io
import os
import sys
import threading

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Optional, Protocol, Union

    class Sha256(Protocol):
        """hashlib's sha256 object and the built-in one alike."""

        def update(self, data: Union[bytes, bytearray, memoryview], /) -> None: ...

        def hexdigest(self) -> str: ...

from ._platform import Host

#: Read-and-hash step. The read and either sha256 (OpenSSL's; the built-in's from 2 KiB on) release the
#: GIL for a whole block; between blocks the idle thread holds it for a few microseconds, and if it is
#: preempted there (an idle thread is preempted by anything) the writer waits for the GIL. Fewer, larger blocks make that rare
#: (docs/benchmarks.md, "The sidecar's sha256 and the target's stop", has the block sizes tried).
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


class FollowingHasher:
    """Hash *path* as a file-order writer fills it; `result(size)` once the writer is done.

    *expected*: about how many bytes the writer will write (the plan's estimate; None if unknown),
    which picks the sha256 implementation (new_sha256)."""

    def __init__(self, path: str, host: Host, *, idle: bool = True, expected: Optional[int] = None) -> None:
        self.path = path
        #: How this OS sets thread priorities (Linux: SCHED_IDLE, left only with CAP_SYS_NICE);
        #: resolved here so the hashing thread never imports anything.
        self._host = host
        self._sha = new_sha256(expected)
        self._pos = 0
        self._file: Optional[io.FileIO] = None
        self._final: Optional[int] = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._error: Optional[BaseException] = None
        #: True while the hasher runs at idle priority (the target is stopped).
        self.idle = idle
        self._handover = False
        self._tid: Optional[int] = None
        self._tid_known = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, args=(idle,), name="dumplib-sha256", daemon=True)
        self._thread.start()

    def released(self) -> None:
        """The target runs again: hash at full speed from now on. Cheap; never blocks on the hasher."""
        with self._lock:
            if not self.idle:
                return
            self.idle = False
            self._tid_known.wait()
            if self._tid is None or self._host.normal_thread(self._tid):  # never idle, finished, or lifted
                return
            # No privilege to lift it: the idle thread hands over at its next block boundary.
            self._handover = True
            idle_thread = self._thread
            self._thread = threading.Thread(target=self._take_over, args=(idle_thread,), name="dumplib-sha256",
                                            daemon=True)
            self._thread.start()
        self._wake.set()

    def result(self, size: int) -> str:
        """The sha256 of the whole file, once the writer has finished it at *size* bytes."""
        self.released()  # the writer is done, so the target is too: nothing left to protect
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
        with self._lock:
            thread = self._thread
        thread.join()

    def _run(self, idle: bool) -> None:
        try:
            self._tid = threading.get_native_id() if idle and self._host.idle_thread(0) else None
            self._tid_known.set()
            self._follow()
        except BaseException as exc:  # reported to the caller by result()
            self._error = exc
        finally:
            self._tid_known.set()  # also when the above failed: released() must never wait for it
            # Under the lock, so released() never sets the policy of a thread id the kernel may
            # already have given to another thread (of any process: this runs as root).
            with self._lock:
                self._tid = None
            if not self._handover:
                self._close()

    def _take_over(self, idle_thread: threading.Thread) -> None:
        idle_thread.join()
        if self._error is not None:
            self._close()
            return
        self._handover = False
        self._run(False)

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _limit(self) -> int:
        """How far the file is final: its size, or less while its writer publishes a frontier."""
        assert self._file is not None
        st = os.fstat(self._file.fileno())
        return min(st.st_size, frontiers.get((st.st_dev, st.st_ino), st.st_size))

    def _handing_over(self) -> bool:
        return self._handover and threading.current_thread() is not self._thread

    def _follow(self) -> None:
        while self._file is None and not self._stop.is_set():
            if self._handing_over():
                return
            try:
                self._file = io.FileIO(os.open(self.path, _OPEN_FLAGS), "rb")
            except FileNotFoundError:  # the writer has not created it yet
                if self._final is not None:
                    # The writer is done, so the file exists: an idle thread held off the CPU for the
                    # whole write gets here only now. Open it; if it is truly gone, result() says so.
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
                if self._handing_over():
                    return
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
            if self._handing_over():
                return
            if not advanced:
                self._wake.wait(0.01)
                self._wake.clear()
