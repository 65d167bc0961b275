"""A snapshot's tracer in a process of its own, so that dumplib dying cannot leave the target broken.

During a snapshot one thread of the target runs an injected clone() with registers only its tracer
knows how to put back. Were the tracer a thread of dumplib, a SIGKILL of dumplib in those few
milliseconds would let the kernel detach the thread in its injected state, and the target would
die. So for snapshots the whole StoppedProcess runs in a small helper process, in a session of its
own (a signal to dumplib's process group or terminal does not reach it): dumplib tells it over a
pipe when to clone, when to let the target go and when to drop the clone. If dumplib dies, the pipe
closes and the helper finishes what it was doing, puts the thread back, lets the target go, kills
the clone and has the target reap it, then exits. The target is never left in anyone's hands.

The helper runs this module (``serve``); RemoteStoppedProcess is its stand-in in dumplib, with the
interface the core writer uses of StoppedProcess.
"""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import os
import pickle
import select
import socket
import subprocess
import time
from typing import Any, Dict, List, Optional, Tuple

from ..._bounded import refused_fork
from ...errors import DumpFailed
from ..interpreter import child_command, not_an_interpreter
from ..proc.pidfiles import start_ticks, thread_state
from ..ptrace.regs import ThreadState
from ..ptrace.stopper import JobControlDeferred, max_pause_error
from .policy import LEFT_ZOMBIE

#: Longest dumplib waits for one answer of the helper. Its steps are bounded (a thread's stop 2 s,
#: an injected call's patience 120 s); past this dumplib gives up waiting, never the helper.
ANSWER_TIMEOUT = 300.0


#: How often check_pause_soon asks the helper at most.
ASK_EVERY = 0.05


class RemoteStoppedProcess:
    """StoppedProcess, carried out by a helper process (see the module's docstring)."""

    def __init__(self, pid: int, *, max_pause: Optional[float] = None) -> None:
        self.pid = pid
        self.max_pause = max_pause
        self.threads: Dict[int, ThreadState] = {}
        #: The helper's StoppedProcess.seized_seconds: how long stopping every thread took.
        self.seized_seconds = 0.0
        self.expired = False
        self.snapshot_pid: Optional[int] = None
        self.snapshot_bytes: Optional[int] = None
        self.snapshot_warnings: List[str] = []
        self._stopped_seconds: Optional[float] = None
        self._asked = 0.0  # when the helper was last asked whether max_pause ran out
        self._started = 0.0
        self._resumed: Optional[float] = None
        self._proc: Optional["subprocess.Popen[bytes]"] = None
        self._commands: Any = None
        self._answers: Any = None
        self._job_control = JobControlDeferred()
        #: The clone's start (/proc/PID/stat field 22): only that process is reaped for a helper killed.
        self._snapshot_start: Optional[int] = None
        #: How the helper ended without letting everything go (killed), and what was done about its clone.
        self._helper_lost: Optional[str] = None
        self._orphan: Optional[str] = None

    # -- the interface of StoppedProcess ------------------------------------------------------------
    def __enter__(self) -> "RemoteStoppedProcess":
        self._spawn()
        try:
            self._job_control.start()
            self._started = time.monotonic()
            self.threads, self.seized_seconds = self._answer()
        except BaseException:
            self.release()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
        exc = exc_info[1] if len(exc_info) > 1 else None
        if self._helper_lost is not None and isinstance(exc, DumpFailed) and exc.reason == "snapshot-lost":
            # The clone died with its tracer (PTRACE_O_EXITKILL), not by the OOM killer: say so, and
            # what became of it (reaped through a new helper, or the pid left as a zombie).
            raise DumpFailed(
                f"the snapshot's tracer process {self._helper_lost} while the memory of process {self.pid} was"
                f" read from its snapshot, and the kernel killed the snapshot with it; nothing was kept."
                f" {self._orphan or 'The snapshot was already gone.'} Try again", pid=self.pid,
                reason="snapshot-lost") from None

    def take_snapshot(self, syscall_at: int, probe_lock: bool = False, *, resume: bool = False) -> int:
        """The helper's SnapshotStopper.take_snapshot (*probe_lock*: first check that the clone will not
        wait for the target's mmap lock). *resume*: the helper lets the target go as soon as the clone
        is made, in the same order: on a loaded host each round trip to this process is a wait for a
        CPU (in the caller's group, which nothing raises) added to the stop."""
        child = int(self._ask(("snapshot", syscall_at, probe_lock, resume)))
        self.snapshot_pid = child
        self._snapshot_start = start_ticks(child)  # held stopped by the helper: it is that process
        if resume:  # after the clone is known: the job-control hand-back may run the caller's handlers
            self._resumed_now()
        return child

    def resume_target(self) -> None:
        if self._resumed is None:  # not already, with the snapshot
            self._ask(("resume",))
            self._resumed_now()

    def _resumed_now(self) -> None:
        self._resumed = time.monotonic()
        self._job_control.finish()

    def check_pause(self) -> None:
        # Asked each time (a pipe round trip): exact, as the final check must be.
        if self._resumed is None and self._proc is not None and not self.expired:
            self._asked = time.monotonic()
            self.expired = bool(self._ask(("expired",)))
        if self.expired:
            raise max_pause_error(self.pid, self.max_pause)

    def check_pause_soon(self) -> None:
        """check_pause between the chunks of a copy made while the target is stopped (a snapshot not
        taken): the helper is asked at most every ASK_EVERY seconds, as each ask is a pipe round trip
        (~50 us at load 8: per 1 MiB chunk, a tenth of a second added to a 2 GiB stop). A target let
        go at max_pause is then found that much later; the check after the copy is always exact."""
        if self.expired or time.monotonic() - self._asked >= ASK_EVERY:
            self.check_pause()

    def alive(self) -> bool:
        return any(thread_state(self.pid, tid) not in ("", "Z", "X") for tid in self.threads)

    @property
    def stopped_seconds(self) -> float:
        if self._stopped_seconds is not None:
            return self._stopped_seconds
        return (self._resumed or time.monotonic()) - self._started

    def release(self) -> None:
        """Tell the helper to let everything go, and wait (bounded) until it has: the target runs and
        the clone is gone before dumplib goes on. If the helper cannot be told, closing the pipe is
        the same order."""
        proc, self._proc = self._proc, None
        try:
            if proc is None:
                return
            done = False  # the helper's last answer, sent once it has let everything go
            try:
                self._send(("release",))
                state = self._receive(ANSWER_TIMEOUT)
                if isinstance(state, dict):
                    done = True
                    self._stopped_seconds = state["stopped_seconds"]
                    self.snapshot_bytes = state["snapshot_bytes"]
                    self.snapshot_warnings = state["snapshot_warnings"]
            except (OSError, EOFError, pickle.PickleError, DumpFailed):
                pass  # the helper is gone, or finishing on its own once our pipe closes
            finally:
                for f in (self._commands, self._answers):
                    try:
                        f.close()
                    except OSError:
                        pass
            try:
                proc.wait(timeout=ANSWER_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass  # never killed: it may be putting a thread back
            if not done and proc.returncode is not None and proc.returncode < 0:
                # Killed (SIGKILL: it ignores the rest) before it could drop the clone: the kernel killed
                # the clone with it and the target is its parent, a zombie child there for good.
                self._helper_lost = f"(process {proc.pid}) was killed ({_signal_name(-proc.returncode)})"
                self._reap_orphan()
        finally:
            self._job_control.finish()

    def _reap_orphan(self) -> None:
        """The killed helper's clone, a zombie child of the target: reaped through a new helper
        (serve_reap), which stops the target again and makes it wait4 the clone, as the helper would
        have. Waited for at most ANSWER_TIMEOUT, never killed (it may be putting a thread back).
        What is left is said in snapshot_warnings (and in the error of a dump that fails), by pid."""
        child, start = self.snapshot_pid, self._snapshot_start
        if child is None or start is None:
            return
        try:
            executable, argv = _helper_command("serve_reap", str(self.pid), str(child), str(start))
            helper = subprocess.Popen(
                argv, executable=executable,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                start_new_session=True, close_fds=True, cwd="/")
        except OSError as exc:
            why = (f"the snapshot (process {child}) may be left as a zombie child of process {self.pid}: no"
                   f" helper could be started to reap it ({exc}); {LEFT_ZOMBIE.format(pid=self.pid)}")
        else:
            try:
                out, _ = helper.communicate(timeout=ANSWER_TIMEOUT)
                why = out.decode("utf-8", "replace").strip()
                if helper.returncode != 0 and not why:
                    why = (f"the snapshot (process {child}) may be left as a zombie child of process {self.pid}:"
                           f" the helper that was to reap it ended with {helper.returncode};"
                           f" {LEFT_ZOMBIE.format(pid=self.pid)}")
            except subprocess.TimeoutExpired:
                why = (f"the snapshot (process {child}) may be left as a zombie child of process {self.pid}: the"
                       f" helper reaping it (process {helper.pid}) did not finish within {ANSWER_TIMEOUT:g} s")
        if why:
            self.snapshot_warnings.append(why)
            self._orphan = why[0].upper() + why[1:] + "."
        else:
            self._orphan = f"Process {self.pid} was made to reap the snapshot (process {child}): nothing is left."

    # -- the pipe -------------------------------------------------------------------------------------
    def _spawn(self) -> None:
        # Orders go over a socket, sent with MSG_NOSIGNAL: to a helper that died, a write() on a pipe
        # raises SIGPIPE, which kills a host that set it to SIG_DFL (Python ignores it; an embedding
        # program may not). The send fails with EPIPE instead, told as the helper's end (_send).
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        commands_r = theirs.detach()
        answers_r, answers_w = os.pipe()
        started = False
        try:
            executable, argv = _helper_command("serve", str(commands_r), str(answers_w), str(self.pid),
                                               repr(self.max_pause))
            self._proc = subprocess.Popen(
                argv, executable=executable,
                pass_fds=(commands_r, answers_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True, cwd="/")
            started = True
        except OSError as exc:  # its fork refused (a pids limit, short memory): the target not yet touched
            if not refused_fork(exc):
                raise
            raise DumpFailed.no_resources("the snapshot's helper process", exc.strerror, exc.errno) from None
        finally:
            os.close(commands_r)
            os.close(answers_w)
            if not started:  # ours too: a watch meeting this at every firing would leak two each time
                ours.close()
                os.close(answers_r)
        self._commands = ours
        self._answers = os.fdopen(answers_r, "rb")

    def _ask(self, message: Tuple[object, ...]) -> Any:
        if self._proc is None:
            raise DumpFailed(f"the tracer of process {self.pid} has already let it go", pid=self.pid)
        self._send(message)
        return self._answer()

    def _answer(self) -> Any:
        kind, value = self._receive(ANSWER_TIMEOUT)
        if kind == "error":
            raise value
        return value

    def _send(self, message: Tuple[object, ...]) -> None:
        try:
            self._commands.sendall(pickle.dumps(message), socket.MSG_NOSIGNAL)
        except OSError:  # EPIPE, ECONNRESET: the helper is gone
            raise DumpFailed(f"the tracer process of process {self.pid} ended unexpectedly", pid=self.pid) from None

    def _receive(self, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        fd = self._answers.fileno()
        while True:
            # Polled in short steps: a Ctrl-C arrives between them, and the helper goes on regardless.
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                try:
                    return pickle.load(self._answers)
                except EOFError:
                    raise DumpFailed(f"the tracer process of process {self.pid} ended unexpectedly",
                                     pid=self.pid) from None
            if time.monotonic() > deadline:
                raise DumpFailed(f"the tracer process of process {self.pid} did not answer within {timeout:g} s",
                                 pid=self.pid)


def _signal_name(signum: int) -> str:
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _helper_command(serve: str, *args: str) -> Tuple[str, List[str]]:
    """(executable, argv) of a helper that runs this module's *serve* function with *args*.

    Isolated, without site (-I -S): no current directory on its path, no PYTHON* variable read, no
    site-packages, .pth file or sitecustomize; it needs only the standard library and this dumplib.
    It runs as root in whatever directory dumplib was started from, which may be anyone's (/tmp):
    with `-c` alone, a dumplib/ there came first on the path and was what the helper imported, and a
    relative PYTHONPATH entry is the same once the caller has changed directory. This dumplib's own
    directory is put last on its path, after the standard library: where dumplib is installed among
    other packages, none of them can stand in for a module of the standard library (a backport of the
    same name) in the helper. Started in / (the callers say cwd="/"), as the binary running dumplib
    (interpreter.child_command)."""
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    flags = "-ISB" if sys.dont_write_bytecode else "-IS"
    code = f"import sys; sys.path.append({package_root!r}); from dumplib._linux.snapshot.remote import {serve}; {serve}()"
    command = child_command(flags, "-c", code, *args)
    if command is None:  # refused before the target is touched (backend._snapshot_checked): here, a bug
        raise DumpFailed(f"no snapshot's tracer can be started: {not_an_interpreter()}")
    return command


def serve_reap() -> None:
    """The helper that reaps a killed helper's clone (clone.reap_orphan): TARGET CHILD START_TICKS on
    its command line; on stdout, why the clone is left (nothing when it was reaped)."""
    import signal

    from .clone import reap_orphan

    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGTSTP):
        signal.signal(sig, signal.SIG_IGN)  # as serve(): once started, it finishes what it does
    pid, child, start = (int(a) for a in sys.argv[1:4])
    try:
        why = reap_orphan(pid, child, start)
    except BaseException as exc:  # noqa: BLE001 (said, not raised: the parent reads stdout only)
        why = (f"the snapshot (process {child}) may be left as a zombie child of process {pid}: reaping it failed"
               f" ({type(exc).__name__}: {exc}); {LEFT_ZOMBIE.format(pid=pid)}")
    sys.stdout.write(why or "")
    sys.stdout.flush()


def serve() -> None:
    """The helper: stop the target, answer dumplib's orders, and when dumplib says release, or its
    pipe closes (dumplib died), let everything go and exit."""
    import signal

    from ..priority import group_raised
    from .clone import SnapshotStopper

    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGTSTP):
        signal.signal(sig, signal.SIG_IGN)  # only dumplib's pipe ends this process's work
    commands = os.fdopen(int(sys.argv[1]), "rb")
    answers = os.fdopen(int(sys.argv[2]), "wb")
    pid = int(sys.argv[3])
    max_pause = None if sys.argv[4] == "None" else float(sys.argv[4])

    def say(message: Any) -> None:
        try:
            pickle.dump(message, answers)
            answers.flush()
        except (OSError, ValueError):
            pass  # dumplib is gone: carry on with the cleanup

    # This helper's session (start_new_session) is an autogroup of its own: at its nice (the stop's,
    # inherited), it weighs as much against other sessions' load as its threads do inside it. Each
    # ptrace step of the stop and the injected clone() wakes this process; in a nice-0 group each
    # waited for a CPU behind the other groups (clone() 37-74 ms against 22-57 ms at load 10). Never
    # put back: the group is this process's alone and ends with it. Only as the session's leader: a
    # helper started without a session of its own would raise its caller's session for good.
    if os.getsid(0) == os.getpid():
        group_raised(os.getpid(), os.getpriority(os.PRIO_PROCESS, 0)).__enter__()
    stopped = SnapshotStopper(pid, max_pause=max_pause)
    try:
        stopped.__enter__()
    except BaseException as exc:
        say(("error", exc))
        return
    try:
        say(("ok", (stopped.threads, stopped.seized_seconds)))
        while True:
            try:
                order = pickle.load(commands)
            except (EOFError, OSError, pickle.PickleError):
                break  # dumplib is gone
            if order[0] == "release":
                break
            try:
                if order[0] == "snapshot":
                    say(("ok", stopped.take_snapshot(order[1], bool(order[2]) if len(order) > 2 else False,
                                                     resume=bool(order[3]) if len(order) > 3 else False)))
                elif order[0] == "resume":
                    stopped.resume_target()
                    say(("ok", None))
                elif order[0] == "expired":
                    say(("ok", stopped.expired))
            except BaseException as exc:
                say(("error", exc))
    finally:
        stopped.release()
        say({"stopped_seconds": stopped.stopped_seconds, "snapshot_bytes": stopped.snapshot_bytes,
             "snapshot_warnings": stopped.snapshot_warnings})
