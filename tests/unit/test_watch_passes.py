"""How a failed dump of one watched process affects the watch (watching._passes), for a process gone at
any step: the error it meets may be dumplib's ProcessNotFound, a raw ESRCH (ProcessLookupError) from a
/proc read the kernel refuses once the process is past being read though it still looks alive, or any
other error once the process is dead. Each is that process's end alone, never the watch's (a
`watch --all NAME` of short-lived processes crashed on such an ESRCH, 1 run in 3). A real process
each time: alive (sleep), or dead and reaped, as psutil sees it. The end-to-end churn test
(test_watch_keeps_going.py) meets these only by chance."""
from __future__ import annotations

import errno
import subprocess
import sys

import psutil
import pytest

from dumplib import _switch
from dumplib.errors import DumpFailed, ProcessNotFound, TargetRefused
from dumplib.watching import _passes, _Watched

if not sys.platform.startswith("linux"):
    pytest.skip("Linux processes", allow_module_level=True)


@pytest.fixture
def alive():
    proc = subprocess.Popen(["sleep", "1000"])
    try:
        yield _Watched(psutil.Process(proc.pid), "sleep", [], _switch.current())
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def dead():
    proc = subprocess.Popen(["sleep", "1000"])
    watched = _Watched(psutil.Process(proc.pid), "sleep", [], _switch.current())
    proc.kill()
    proc.wait()
    return watched


@pytest.mark.parametrize("exc", [OSError(errno.ESRCH, "No such process"), ProcessLookupError(),
                                 ProcessNotFound(1)], ids=["raw-esrch", "lookup", "not-found"])
def test_a_process_gone_is_its_own_end_even_while_it_still_looks_alive(alive, exc):
    assert alive.alive()
    assert _passes(exc, alive) == "process-done"


@pytest.mark.parametrize("exc", [OSError(errno.EIO, "Input/output error"), DumpFailed("a read failed", pid=1),
                                 ValueError("unexpected")], ids=["oserror", "dump-failed", "other"])
def test_any_error_of_a_process_that_is_gone_is_its_own_end(dead, exc):
    assert not dead.alive()
    assert _passes(exc, dead) == "process-done"


def test_errors_of_a_live_process_keep_their_own_weight(alive):
    """The other side, so that the rule above is not 'everything is process-done': a refusal that can
    pass keeps watching, a broken output ends the watch."""
    assert _passes(TargetRefused("frozen", pid=1, reason="thread-not-stopping"), alive) == "watch-on"
    assert _passes(DumpFailed("the pipe closed", pid=1, reason="broken-pipe"), alive) is None
    assert _passes(ValueError("unexpected"), alive) is None


def test_a_thread_or_child_the_system_refused_keeps_the_watch_going(alive):
    """At a pids limit a dump fails with DumpFailed no-resources (the message the kernel's own refusal
    gives: tests/e2e_linux/test_thread_refusal.py); the next firing may find room, so the process is
    watched on. Before, the bare RuntimeError ("can't start new thread") ended the whole watch."""
    assert _passes(DumpFailed.no_resources("the thread that stops the target"), alive) == "watch-on"
    assert _passes(RuntimeError("can't start new thread"), alive) is None  # what it was: the watch's end
