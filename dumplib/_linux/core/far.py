"""Reads of a process's memory made by a throwaway child process, for pages a file system may have to serve.

A page of a file mapped from a FUSE, NFS or CIFS mount is read only if it was found resident while the
target was stopped (core/memory.Prober). The kernel may still reclaim it before the read, which then
faults it in from that file system; a daemon or server that does not answer holds the read. dumplib
gives up on it after its bound (backend._bounded_reads), but a FUSE read its daemon has already taken is
waited for uninterruptibly, even after SIGKILL (measured: the reader stays in D state in
request_wait_answer until the daemon answers), and a process with a thread in that wait cannot finish
exiting. So those reads are made by a child: stuck, it is the child that waits, dumplib kills it and can
always exit; the child ends once the read returns (or when the connection is aborted).

The child is started at the first such read of a copy or a layout (about 12 ms of a bare interpreter, `-I -S`,
while the target is stopped: only dumps of processes that map files from such mounts pay it) and reads
the target's /proc/PID/mem through the descriptor dumplib opened (inherited: no second permission
check) into a shared buffer (a memfd both map), answering each request over a pipe with the count read:
one copy more than a read in place. It runs in a session of its own (a Ctrl-C at the terminal is
dumplib's to handle, not the child's) and ends when its request pipe closes.
"""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import errno
import mmap
import os
import re
import select
import signal
import socket
import struct
import subprocess
import time
from typing import List, Optional

from ..._bounded import refused_fork
from ...errors import DumpFailed
from ..interpreter import child_command

#: The child's whole program: read (address, length) requests, answer each with the count read (or
#: -errno) and the bytes. Only os calls: nothing that could wait on anything but the read itself.
_CHILD = r"""
import mmap, os, struct, sys
mem, req, resp, shm, size = (int(a) for a in sys.argv[1:6])
shared = memoryview(mmap.mmap(shm, size))
while True:
    head = b""
    while len(head) < 12:
        more = os.read(req, 12 - len(head))
        if not more:
            os._exit(0)
        head += more
    address, length = struct.unpack("<QI", head)
    try:
        out = struct.pack("<q", os.preadv(mem, [shared[:length]], address))
    except OSError as exc:
        out = struct.pack("<q", -(exc.errno or 5))
    os.write(resp, out)
"""
_REQUEST = struct.Struct("<QI")
_ANSWER = struct.Struct("<q")
#: The shared buffer: no read of a copy is larger (core/memory.CHUNK); a larger one is made in parts.
BUFFER = 1 << 20
#: How long one answer is waited for before the child is killed and the read fails (ETIMEDOUT). In a
#: bounded worker (backend._bounded_reads) the caller has given up long before (MM_LOCK_SECONDS asleep);
#: this only ends the worker's own wait, so no thread of dumplib's waits on the child for good.
ANSWER_PATIENCE = 30.0


#: Reader children of this process with a read asked and not answered (killed or not): reader pid ->
#: the pid whose memory it reads (from its /proc/PID/mem descriptor), until answered or reaped. One
#: stuck in a file system's read may be what holds that process's mmap lock, which a refusal then says
#: (proc/errors.memory_map_locked). (Such a wait is not always state D: a FUSE request the daemon has
#: taken is first waited for interruptibly.)
_asked: "dict[int, int]" = {}


def stuck_readers(pid: int) -> List[int]:
    """The pids of this process's reader children of *pid*'s memory that have not answered a read yet
    (readers of other processes, a snapshot's clone among them, hold no lock of *pid*'s)."""
    return sorted(reader for reader, of in list(_asked.items()) if of == pid)


def _memory_of(mem: int) -> int:
    """The pid whose memory descriptor *mem* reads (its /proc/PID/mem), or 0 if that cannot be told."""
    try:
        match = re.fullmatch(r"/proc/(\d+)/mem", os.readlink(f"/proc/self/fd/{mem}"))
    except OSError:
        return 0
    return int(match.group(1)) if match else 0


def _reap(proc: "subprocess.Popen[bytes]") -> None:
    try:
        proc.wait()
    finally:
        _asked.pop(proc.pid, None)


class FarReader:
    """pread of the memory behind *mem* (an open /proc/PID/mem), by a child process (module docstring)."""

    def __init__(self, mem: int) -> None:
        self.mem = mem
        self._of = _memory_of(mem)
        self._proc: Optional["subprocess.Popen[bytes]"] = None
        self._resp = self._shm = -1
        #: Our end of the request socket (module docstring: requests are sent with MSG_NOSIGNAL).
        self._requests: Optional[socket.socket] = None
        self._shared: Optional[mmap.mmap] = None
        #: Why the child could not be started (told again at once: not retried page by page).
        self._broken: Optional[DumpFailed] = None

    def pread_into(self, view: memoryview, address: int) -> int:
        """Read len(*view*) bytes at *address* into *view*; the count read, as os.preadv counts it
        (short where the range runs into unreadable memory, 0 once the address space is gone);
        OSError as os.preadv raises it, or ETIMEDOUT when the child did not answer in time, or ECHILD
        when it ended (neither an errno of an unreadable range: the copy fails rather than leave a hole)."""
        done = 0
        while done < len(view):
            part = min(BUFFER, len(view) - done)
            got = self._read_part(view[done : done + part], address + done)
            done += got
            if got < part:
                break
        return done

    def _read_part(self, view: memoryview, address: int) -> int:
        if self._proc is None:
            if child_command() is None:
                # dumplib embedded in a program that is not Python (interpreter.py: never run with our
                # arguments): read in place, bounded as before, at the cost this module exists to avoid
                # (a read its daemon holds keeps us from exiting).
                return os.preadv(self.mem, [view], address)
            self._start()
        assert self._shared is not None and self._proc is not None
        pid = self._proc.pid
        try:
            _asked[pid] = self._of
            self._send(_REQUEST.pack(address, len(view)))
            count = int(_ANSWER.unpack(self._receive(_ANSWER.size, time.monotonic() + ANSWER_PATIENCE))[0])
            _asked.pop(pid, None)  # answered (left in while killed unanswered: _reap takes it out)
        except BaseException:
            # Whatever cut the exchange short (an Abandoned worker, a signal's exception), an answer may
            # still come for this request: the next one must never take it for its own. A new child then.
            self.close()
            raise
        if count < 0:
            raise OSError(-count, os.strerror(-count))
        view[:count] = memoryview(self._shared)[:count]
        return count

    def close(self) -> None:
        """Kill the child (it may be waiting on a file system: it ends when that read returns) and
        close the pipes. Not waited for: its exit status is collected by subprocess later, or by init."""
        proc, self._proc = self._proc, None
        for fd in (self._resp, self._shm):
            if fd >= 0:
                os.close(fd)
        self._resp = self._shm = -1
        if self._requests is not None:
            self._requests.close()
            self._requests = None
        if self._shared is not None:
            self._shared.close()
            self._shared = None
        if proc is not None:
            try:
                proc.send_signal(signal.SIGKILL)
            except OSError:
                pass
            # Reaped by a thread of its own: at once if it was reading memory, whenever its file system
            # answers if it waits on one; never a zombie left in a long-lived host.
            import _thread

            try:
                _thread.start_new_thread(_reap, (proc,))
            except RuntimeError:  # no thread to spare (a pids limit): reaped now if it has ended already
                proc.poll()

    def _start(self) -> None:
        """Start the child; DumpFailed if it cannot be (ENOMEM, EAGAIN under a pids limit): not an errno
        of an unreadable range, which would leave every page of the mapping a silent hole."""
        if self._broken is not None:
            raise self._broken
        ends: List[int] = []
        try:
            self._shm = os.memfd_create("dumplib-far", os.MFD_CLOEXEC)
            os.ftruncate(self._shm, BUFFER)
            self._shared = mmap.mmap(self._shm, BUFFER)
            # Requests go over a socket, sent with MSG_NOSIGNAL: to a dead child a write() on a pipe raises
            # SIGPIPE, which kills a host that set it to SIG_DFL (Python ignores it; an embedding program,
            # or a CLI that restores it for `| head`, may not). The send then fails with EPIPE instead.
            self._requests, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            req_r = theirs.detach()
            ends.append(req_r)
            resp_r, resp_w = os.pipe2(os.O_CLOEXEC)
            ends += [resp_r, resp_w]
            command = child_command("-I", "-S", "-c", _CHILD, str(self.mem), str(req_r), str(resp_w), str(self._shm),
                                    str(BUFFER))
            if command is None:  # _read_part looked first: only a binary that changed its name since
                raise OSError(errno.ENOEXEC, "the binary running dumplib is not a Python interpreter")
            self._proc = subprocess.Popen(
                command[1], executable=command[0],
                pass_fds=(self.mem, req_r, resp_w, self._shm), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True)
        except OSError as exc:
            for fd in ends:
                os.close(fd)
            self.close()
            self._broken = DumpFailed(
                f"could not start the process that reads pages of files on FUSE, NFS or CIFS mounts"
                f" ({exc.strerror}; core/far.py): the dump was given up rather than left with holes. Free"
                " memory or raise the pids limit, and dump again", errno=exc.errno,
                reason="no-resources" if refused_fork(exc) else None)
            raise self._broken from None
        except BaseException:
            for fd in ends:
                os.close(fd)
            self.close()
            raise
        os.close(req_r)
        os.close(resp_w)
        self._resp = resp_r

    def _send(self, data: bytes) -> None:
        assert self._requests is not None
        try:
            self._requests.sendall(data, socket.MSG_NOSIGNAL)
        except OSError:  # the child is gone (killed): no answer will come
            self.close()
            raise OSError(errno.ECHILD, "the reader process of this copy ended") from None

    def _receive(self, n: int, deadline: float) -> bytes:
        buf = bytearray(n)
        view = memoryview(buf)
        at = 0
        while at < n:
            at += self._receive_into(view[at:], deadline)
        return bytes(buf)

    def _receive_into(self, view: memoryview, deadline: float) -> int:
        """Some bytes of the child's answer into *view* (at least one), waiting until *deadline*."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise OSError(errno.ETIMEDOUT, "the reader process of this copy did not answer (its read waits on"
                                               " a file system)")
            ready, _, _ = select.select([self._resp], [], [], min(left, 0.5))
            if not ready:
                continue
            got = os.readv(self._resp, [view])
            if got == 0:
                self.close()
                raise OSError(errno.ECHILD, "the reader process of this copy ended")
            return got
