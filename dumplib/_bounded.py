"""Calls that may block in the kernel for good, made in a worker thread that is abandoned after a bound.

A read of another process's /proc/PID/cmdline, environ, smaps, pagemap, map_files or mem takes that
process's mmap lock; when something holds it for good (a read of one of its pages stuck on a stalled
FUSE or NFS mount, and a writer queued behind it), the read waits in the kernel. No flag or signal gets
the reader out, so the read is made in a thread of its own and abandoned after *seconds*: the caller
gets TimeoutError (an OSError, so callers that treat an unreadable /proc file as "unknown" need no
change). The abandoned thread finishes whenever the kernel lets it, or dies with the process: those
waits are killable, so a process with an abandoned worker still exits (measured: its parent gets the
exit status at once). process_vm_readv waits for the same lock *unkillably*: a thread stuck in it
keeps its process a zombie its parent cannot reap until the lock is free, so dumplib never calls it
on a live process (core/memory.py reads /proc/PID/mem).

Two ways to bound:
- ``call_within(fn, seconds)``: fn as a whole (one read: a command line, a memory sample);
- ``call_within(fn, seconds, each=True)``: fn may run as long as it takes, but each call it makes
  through ``blocking()`` is bounded (a plan or a copy: thousands of reads, one thread for all of
  them, and a read's bound that does not grow with the size of the target). A call is given up on
  once it has lasted *seconds* and its thread sleeps in the kernel: one still running there (a read
  of the smaps of a mapping of hundreds of GiB walks its page tables for seconds) gets another
  *seconds*. What fn writes to its caller's output goes through ``guarded()``: once the caller has
  given up, fn writes nothing more.

A call on the caller's output file (a write, a truncate) made through ``output_call()`` is bounded the
same way by WRITE_STALL_SECONDS, and a worker given up on there makes call_within raise OutputStalled:
the output's file system (NFS, FUSE, a disk that stopped) does not answer, and what the worker holds
(the target stopped, a snapshot's clone, memory staged for the copy) must not wait for it.
"""
from __future__ import annotations

import _thread  # not threading: its import costs the one-shot command's start-up
import errno
import os
import time

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Hashable, List, Optional, Tuple, TypeVar
else:
    from ._typing import TypeVar

__all__ = ["call_within", "stuck", "blocking", "output_call", "guarded", "lineage", "close_later", "closing",
           "stalled_output", "spawn", "start_thread", "unanswered", "refused_fork", "Abandoned", "Unanswered", "OutputStalled"]

T = TypeVar("T")

#: key -> the lock a still-running abandoned call holds: later calls with that key fail at once,
#: so a stuck process costs one bound, not one per read, and no new thread is left behind it.
_abandoned: Dict[Hashable, Any] = {}
#: How long a caller that gives up on a worker (an exception of its own: Ctrl-C, a signal handler's)
#: waits for the worker to leave a guarded() write it is in: a write that takes longer than this is
#: blocked in the kernel with its file already resolved, and whatever the caller closes then is safe.
WRITE_PATIENCE = 1.0
#: How long one call on a dump's output file (output_call(): a write, a truncate) may go unanswered,
#: asleep in the kernel, before its caller gives the worker up (OutputStalled). Per call, not per dump:
#: a busy disk answers a 1 MiB write within seconds (writeback throttling sleeps a fraction of a second
#: at a time), so only a file system that has stopped answering (an NFS server gone, a FUSE daemon
#: hung) takes a minute over one. The same call running in the kernel (state R) gets another bound.
WRITE_STALL_SECONDS = 60.0
#: How often, and how far apart, a call that has lasted its bound is looked at before it is given up
#: on: asleep (not R) every time means waiting, running once means working.
_LOOKS, _LOOK_APART = 5, 0.02


def _refused(exc: RuntimeError) -> bool:
    """Whether *exc* is the interpreter's word that the system refused a thread (pthread_create's EAGAIN:
    a pids limit, the threads-max sysctl, short memory), not a misuse such as starting a thread twice."""
    return "can't start new thread" in str(exc)


def refused_fork(exc: OSError) -> bool:
    """Whether a child's start failed because the system refused a process (fork's EAGAIN at a pids or
    user-process limit, ENOMEM), not for the command's own fault: DumpFailed.no_resources, then."""
    return exc.errno in (errno.EAGAIN, errno.ENOMEM)


def spawn(fn: Callable[..., Any], args: Tuple[Any, ...] = (), what: str = "a thread") -> None:
    """``_thread.start_new_thread(fn, args)``; DumpFailed (reason no-resources) when the system refuses it."""
    try:
        _thread.start_new_thread(fn, args)
    except RuntimeError as exc:
        if not _refused(exc):
            raise
        from .errors import DumpFailed

        raise DumpFailed.no_resources(what) from None


def unanswered(exc: BaseException) -> bool:
    """Whether *exc* from call_within means no answer was had: Unanswered (a TimeoutError), or no thread
    to ask in (DumpFailed no-resources, from spawn). Best-effort reads (a sample, a ps row, a command
    line, the host's look at its files) take either as "unknown"; a dump's reads fail with it."""
    return isinstance(exc, TimeoutError) or getattr(exc, "reason", None) == "no-resources"


def start_thread(thread: Any, what: str) -> None:
    """``thread.start()`` (a threading.Thread); DumpFailed (reason no-resources) when the system refuses it.
    Such a thread is not alive, and join() on it raises: a caller that joins keeps it once started."""
    try:
        thread.start()
    except RuntimeError as exc:
        if not _refused(exc):
            raise
        from .errors import DumpFailed

        raise DumpFailed.no_resources(what) from None


class Unanswered(TimeoutError):
    """call_within's own timeout (a TimeoutError, so an OSError), told apart from one *fn* raised."""


class OutputStalled(TimeoutError):
    """call_within's give-up on a worker whose output_call() went unanswered for WRITE_STALL_SECONDS."""


class Abandoned(BaseException):
    """Raised in an abandoned worker at its next blocking() or guarded() call: its caller has gone on.
    A BaseException, so that no ``except Exception`` on the worker's way out swallows it."""


class _Watch:
    """What a worker of call_within(..., each=True) shares with its caller."""

    def __init__(self) -> None:
        self.gate = _thread.allocate_lock()  # held for a moment only, by either side
        self.writing = _thread.allocate_lock()  # held by the worker for each guarded() call
        #: The bounded call in progress: (when it began, its bound or None for call_within's, whether it
        #: is an output_call), one attribute so that the caller reads the three together.
        self.call: Optional[Tuple[float, Optional[float], bool]] = None
        self.abandoned = False
        self.tid = 0  # the worker's thread id, as /proc/self/task names it


_local = _thread._local()


def _watch() -> Optional[_Watch]:
    return getattr(_local, "watch", None)


def lineage() -> Tuple[int, ...]:
    """This thread's ident, then those of the threads waiting on it through call_within (its caller,
    that caller's caller...): work handed to a worker is still its caller's (backend's one stop per
    process and thread)."""
    return (_thread.get_ident(),) + getattr(_local, "callers", ())


def blocking(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, a call that may block in the kernel for good (a read that takes another process's
    mmap lock). In a worker of call_within(..., each=True) its caller gives up on the worker once this
    call has not returned within the bound, and the worker then raises Abandoned here instead of going
    on; anywhere else it is a plain call."""
    return _bounded_call(None, False, fn, *args)


def output_call(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, a call on the caller's output file (a write, a truncate) that waits on its file
    system: in a worker of call_within(..., each=True), given up on as blocking() is, after
    WRITE_STALL_SECONDS (call_within then raises OutputStalled); anywhere else a plain call."""
    return _bounded_call(WRITE_STALL_SECONDS, True, fn, *args)


def _bounded_call(limit: Optional[float], output: bool, fn: Callable[..., T], *args: Any) -> T:
    watch = _watch()
    if watch is None:
        return fn(*args)
    with watch.gate:
        if watch.abandoned:
            raise Abandoned()
        watch.call = (time.monotonic(), limit, output)
    try:
        return fn(*args)
    finally:
        with watch.gate:
            watch.call = None
            gone = watch.abandoned
        if gone:
            raise Abandoned()  # the caller went on: nothing of this call's result may be used


def guarded(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, a write to what the caller of call_within(..., each=True) owns (its output file or
    stream): made only while the caller still waits for this worker, so that a worker the caller gave
    up on never writes into a descriptor the caller has closed (and the system may have handed out
    again). Anywhere else it is a plain call."""
    watch = _watch()
    if watch is None:
        return fn(*args)
    with watch.writing:
        if watch.abandoned:  # read after taking the lock: the caller sets it before it takes it
            raise Abandoned()
        return fn(*args)


def stuck(key: Hashable) -> bool:
    """Whether an earlier call made with *key* was abandoned and has still not returned."""
    lock = _abandoned.get(key)
    if lock is None:
        return False
    if lock.locked():
        return True
    _abandoned.pop(key, None)  # it returned after all: the next call is tried
    return False


def call_within(fn: Callable[[], T], seconds: float, key: Optional[Hashable] = None, *, each: bool = False,
                on_interrupt: Optional[Callable[[], None]] = None) -> T:
    """*fn()*'s result, or Unanswered (a TimeoutError) when it has not returned after *seconds* (or when
    an abandoned call with the same *key* is still running). Exceptions of *fn* are raised here.

    With *each*, *seconds* bounds every blocking() call fn makes rather than fn as a whole: Unanswered
    once one of them has not returned within it (found within twice *seconds*); an output_call() that
    has not returned within WRITE_STALL_SECONDS: OutputStalled. An exception raised in the caller while it waits (KeyboardInterrupt) gives up on the worker too, which then stops at its
    next blocking() or guarded() call; the caller waits for a guarded() write in progress to end (at
    most WRITE_PATIENCE) before the exception goes on; *on_interrupt* is called before that wait (the
    writer lets the stopped target go there: a stalled write must not add the patience to its stop)."""
    if key is not None and stuck(key):
        raise Unanswered(f"an earlier read of {key} is still blocked in the kernel")
    done = _thread.allocate_lock()
    done.acquire()
    box: List[Any] = []
    watch = _Watch() if each else None
    callers = lineage()

    def run() -> None:
        if watch is not None:
            watch.tid = _thread.get_native_id()
        _local.watch = watch
        _local.callers = callers
        try:
            box.append((True, fn()))
        except BaseException as exc:  # handed to the caller, whatever it is
            box.append((False, exc))
        finally:
            _local.watch = None
            done.release()

    spawn(run, (), "a thread for a bounded read")
    try:
        stuck_call = _wait(done, seconds, watch)
    except BaseException:
        if watch is not None:
            if on_interrupt is not None:
                try:
                    on_interrupt()
                except Exception:  # the caller's own exception is the one to raise; its cleanup runs again
                    pass
            _give_up(watch, wait_for_write=True)
        raise
    if stuck_call is not None:
        if stuck_call[2]:  # the output's file system, not the read's process: no key is marked stuck
            raise OutputStalled(f"an output write got no answer within {stuck_call[1]:g} s (its file system"
                                " does not answer)")
        if key is not None:
            _abandoned[key] = done
        raise Unanswered(f"no answer within {seconds:g} s (blocked in the kernel)")
    ok, value = box[0]
    if ok:
        return value  # type: ignore[no-any-return]
    raise value


def _wait(done: Any, seconds: float, watch: Optional[_Watch]) -> Optional[Tuple[float, Optional[float], bool]]:
    """None once the worker finished, or the call it was given up on in (one that has lasted its bound,
    *seconds* or an output_call's, asleep in the kernel)."""
    if watch is None:
        return None if done.acquire(timeout=seconds) else (0.0, seconds, False)
    call: Optional[Tuple[float, Optional[float], bool]] = None  # the call looked at, and when it is due
    due = 0.0
    while True:
        current = watch.call
        if current is not None and current is not call:
            call, due = current, current[0] + (current[1] or seconds)
        # At most *seconds* at a time: a read that begins during a write's longer bound is looked at in time.
        left = seconds if current is None else min(seconds, due - time.monotonic())
        if done.acquire(timeout=max(0.0, left)):
            return None
        if call is None or watch.call is not call or time.monotonic() < due:
            continue
        if _running(watch.tid):
            due = time.monotonic() + (call[1] or seconds)  # working in the kernel, not waiting: another bound
            continue
        with watch.gate:
            if watch.call is call:
                watch.abandoned = True  # seen by the worker when its call returns, before it uses it
                return call


def _running(tid: int) -> bool:
    """Whether thread *tid* of this process runs (or waits for a CPU: state R) at any of a few looks;
    False where that cannot be read (no /proc: time alone decides)."""
    for look in range(_LOOKS):
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                data = f.read()
        except OSError:
            return False
        if data[data.rfind(b")") + 2 :][:1] == b"R":
            return True
        if look + 1 < _LOOKS:
            time.sleep(_LOOK_APART)
    return False


def _give_up(watch: _Watch, wait_for_write: bool) -> None:
    with watch.gate:
        watch.abandoned = True
    if wait_for_write and watch.writing.acquire(timeout=WRITE_PATIENCE):
        watch.writing.release()


def close_later(fd: int) -> None:
    """Close *fd* in a thread of its own, not waited for: a descriptor of a file whose file system has
    stopped answering (OutputStalled), whose close would wait on it (FUSE's flush, NFS's writeback).
    The kernel frees the number before that wait, so it may be handed out again at once: the caller
    must not use *fd* after this, as after any close (a write still stuck on it holds its own
    reference to the file, not the number)."""
    def close() -> None:
        try:
            os.close(fd)
        except OSError:
            pass  # a failure path's: the dump already failed, and said why

    try:
        _thread.start_new_thread(close, ())
    except RuntimeError:
        pass  # no thread to spare: the descriptor stays open rather than a close that may never return


def stalled_output(exc: Optional[BaseException]) -> bool:
    """Whether *exc* is the failure of a dump whose output's file system stopped answering (the writer
    turns OutputStalled into DumpFailed reason "output-stalled")."""
    return getattr(exc, "reason", None) == "output-stalled"


class closing:
    """``with closing(fd):`` closes *fd* after the block, or in the background (close_later) when the
    block failed because the output stalled: that close would wait on the same file system."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, kind: object, exc: Optional[BaseException], tb: object) -> None:
        if stalled_output(exc):
            close_later(self.fd)
        else:
            os.close(self.fd)
