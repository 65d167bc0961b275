"""dumplib._bounded: a call that blocks is abandoned after its bound, and a key stays stuck until it returns."""
from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from dumplib._bounded import call_within, stuck


def test_a_blocked_call_is_abandoned_and_its_key_fails_at_once_until_it_returns():
    r, w = os.pipe()  # a read of an empty pipe blocks in the kernel, as a read of a stuck /proc file does
    try:
        with pytest.raises(TimeoutError):
            call_within(lambda: os.read(r, 1), 0.2, key="k")
        assert stuck("k")
        ran = []
        with pytest.raises(TimeoutError):
            call_within(lambda: ran.append(1), 60, key="k")  # not tried: the earlier read still blocks
        assert ran == [] and call_within(lambda: "other", 60, key="other") == "other"
        os.write(w, b"x")  # the abandoned read returns
        deadline = time.monotonic() + 60
        while stuck("k") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not stuck("k")
        assert call_within(lambda: "again", 60, key="k") == "again"
    finally:
        os.close(r)
        os.close(w)


def test_the_calls_result_and_exceptions_come_back():
    assert call_within(lambda: 42, 60) == 42
    with pytest.raises(ZeroDivisionError):
        call_within(lambda: 1 // 0, 60)
    with pytest.raises(FileNotFoundError):  # an OSError of the call is the caller's, not a timeout
        call_within(lambda: open("/proc/0/cmdline", "rb"), 60)


def test_each_bounds_every_blocking_call_not_the_whole_work():
    from dumplib._bounded import blocking

    def work():  # 16 reads of 0.25 s: 4 s in all, each well inside the 2 s bound (a late wake-up under
        # Wine at load, where no /proc tells a running call from a stuck one, has 1.75 s of room)
        return sum(blocking(lambda: (time.sleep(0.25), 1)[1]) for _ in range(16))

    assert call_within(work, 2.0, each=True) == 16


def test_each_gives_up_on_a_stuck_blocking_call_and_the_worker_then_writes_nothing():
    from dumplib._bounded import Unanswered, blocking, guarded

    r, w = os.pipe()
    written, after = [], []

    def work():
        guarded(written.append, "before")
        blocking(os.read, r, 1)  # stuck until the pipe gets a byte
        after.append("read returned")  # never reached: the worker is abandoned by then
        guarded(written.append, "after")

    try:
        started = time.monotonic()
        with pytest.raises(Unanswered):
            call_within(work, 0.3, key="each", each=True)
        assert time.monotonic() - started < 30  # found within twice the bound (plus a loaded machine's slack)
        assert stuck("each")
        os.write(w, b"x")  # the stuck read returns: the worker sees it was given up on
        deadline = time.monotonic() + 60
        while stuck("each") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not stuck("each")
        assert written == ["before"] and after == []
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="a POSIX signal interrupts the caller")
def test_an_exception_in_the_waiting_caller_stops_the_worker_at_its_next_guarded_write():
    import threading

    from dumplib._bounded import guarded

    class Interrupted(Exception):
        pass

    def interrupted(*_: object) -> None:
        raise Interrupted()  # as the command's SIGTERM handler or Ctrl-C's KeyboardInterrupt does

    written = []
    go_on = threading.Event()

    def work():
        guarded(written.append, 1)
        # A signal to the process while its main thread waits: the kernel hands it to that thread.
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        go_on.wait(60)
        guarded(written.append, 2)

    old = signal.signal(signal.SIGUSR1, interrupted)
    try:
        started = time.monotonic()
        with pytest.raises(Interrupted):
            call_within(work, 60, each=True)
        assert time.monotonic() - started < 30, "the caller's wait was not interrupted"
    finally:
        signal.signal(signal.SIGUSR1, old)
    go_on.set()
    time.sleep(0.2)
    assert written == [1]


def test_blocking_and_guarded_are_plain_calls_outside_a_worker_and_lineage_names_the_callers():
    import _thread

    from dumplib._bounded import blocking, guarded, lineage

    assert blocking(lambda x: x + 1, 1) == 2 and guarded(lambda: "w") == "w"
    me = _thread.get_ident()
    assert lineage() == (me,)
    inner = call_within(lineage, 60)
    assert inner[1:] == (me,) and inner[0] != me


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread's state is read from /proc (under Wine, /proc is the Linux host's, through Z:)")
def test_a_blocking_call_that_runs_rather_than_waits_is_not_given_up_on():
    import hashlib

    from dumplib._bounded import blocking

    data = bytes(128 << 20)  # hashed without the GIL: the thread runs (state R), as a read walking page tables does
    started = time.monotonic()
    digest = call_within(lambda: blocking(lambda: hashlib.sha256(data).hexdigest()), 0.05, each=True)
    assert digest == hashlib.sha256(data).hexdigest()
    assert time.monotonic() - started > 0.05  # it did outlast its bound, running


def test_a_stuck_output_call_is_given_up_on_after_its_own_bound_and_marks_no_key(monkeypatch):
    """An output_call (a write to the dump's file on a file system that stopped answering) has its own
    bound, WRITE_STALL_SECONDS, not the reads' *seconds*: given up on after it, call_within raises
    OutputStalled (not Unanswered, whose key would say the process's memory map is stuck), and the
    worker, once its call returns, writes nothing more."""
    from dumplib import _bounded
    from dumplib._bounded import OutputStalled, Unanswered, blocking, guarded, output_call

    # The reads' bound 2 s, the output's 4 s: the read below (0.3 s) has 1.7 s of room for a late wake-up
    # (under Wine no /proc says a starved call is running), and the output outlives the reads' bound.
    monkeypatch.setattr(_bounded, "WRITE_STALL_SECONDS", 4.0)
    r, w = os.pipe()
    written, after, reads = [], [], []

    def work():
        reads.append(blocking(lambda: (time.sleep(0.3), "read")[1]))  # a read, inside *seconds*
        guarded(written.append, "before")
        guarded(output_call, os.read, r, 1)  # stuck until the pipe gets a byte, as a write to a hung mount
        after.append("returned")
        guarded(written.append, "after")

    try:
        with pytest.raises(OutputStalled) as caught:
            call_within(work, 2.0, key="out", each=True)
        assert not isinstance(caught.value, Unanswered)
        assert not stuck("out")  # the output stalled, not the process the key names
        assert reads == ["read"] and written == ["before"]
        os.write(w, b"x")  # the stuck call returns: the worker sees it was given up on
        time.sleep(0.5)
        assert after == [] and written == ["before"]
    finally:
        os.close(r)
        os.close(w)


def test_an_output_call_is_not_given_up_on_within_its_bound_though_longer_than_the_reads():
    """A slow write (0.6 s here) inside a worker whose reads are bounded at 0.2 s is not a stall."""
    from dumplib._bounded import output_call

    assert call_within(lambda: output_call(lambda: (time.sleep(0.6), "written")[1]), 0.2, each=True) == "written"
