"""A watch's timeout passing while a dump is under way on an event source's thread (the dump at a
process's exit, or at a watched signal): the timeout bounds the watch, so that dump is given up as at an
interruption (an `abandoned` event after `timeout`, its partial file removed), the process goes on (its
exit completes with its own status; the signal reaches its handler as sent), and `watch()` returns only
once all of that is done: an exit dump used to be left running after 15 s, its partial file left behind
when the program ended.

Nothing here times the machine: the dump is held in its progress callback until the watch has said
`timeout`, and a while longer than the watcher's patience for its source (shrunk to 1 s here).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, List, Tuple

import pytest

import dumplib
from dumplib._linux import signalwatch
from helpers import leftovers
from linuxrig import build_source, proc_status

pytestmark = pytest.mark.linux
HERE = Path(__file__).resolve().parent
#: The watch's timeout: long enough for the watcher to attach, the process to act and its dump to begin at
#: load 10 (the deadline runs from watch()'s start; a dump begun after it would never be under way).
TIMEOUT = 8.0
#: The watcher's patience for its source after the timeout, in place of its own (15 s), so that a watch
#: returning before the dump has ended shows here in seconds.
PATIENCE = 1.0
#: How long the held dump goes on after the timeout: past PATIENCE.
HELD_AFTER = 3.0

EXITER = ("import sys\n"
          "block = bytes(range(256)) * (64 << 12)  # 64 MiB: many progress ticks in a full dump\n"
          "print('ready', flush=True)\n"
          "sys.stdin.readline()\n"
          "sys.exit(3)\n")


@pytest.fixture(scope="module")
def handover_exe(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    return build_source(tmp_path_factory.mktemp("handover"), HERE / "handover_target.c", name="dlw-handover")


def held_until_timeout(outdir: Path, timed_out: threading.Event, seen: List[List[str]]) -> Callable[[int, float], None]:
    """A progress callback: the first call made once the dump's temporary exists notes it, then waits
    for the watch's timeout and HELD_AFTER more."""
    def progress(written: int, elapsed: float) -> None:
        if seen:
            return
        temporary = leftovers(outdir)
        if temporary:
            seen.append(temporary)
            assert timed_out.wait(120), "the watch never said timeout"
            time.sleep(HELD_AFTER)
    return progress


def wait_for(what: Callable[[], bool], patience: float = 30.0) -> bool:
    deadline = time.monotonic() + patience
    while not what():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def watched_to_the_timeout(pid: int, trigger: dumplib.Trigger, outdir: Path, act: Callable[[], None]
                           ) -> Tuple[List[dumplib.DumpResult], List[dumplib.WatchEvent], List[str], List[List[str]]]:
    """watch(*pid*, *trigger*) to TIMEOUT; *act* (what makes the trigger fire) once it is watching, and the
    dump held (held_until_timeout). (results, events, the directory's names as watch() returned: not once
    the test ends, and the temporary the held dump had written.)"""
    events: List[dumplib.WatchEvent] = []
    timed_out = threading.Event()
    seen: List[List[str]] = []

    def on_event(e: dumplib.WatchEvent) -> None:
        events.append(e)
        if e.event == "watching":
            act()
        elif e.event == "timeout":
            timed_out.set()

    results = dumplib.watch(pid, trigger, path=outdir, kind="full", timeout=TIMEOUT, on_event=on_event,
                            progress=held_until_timeout(outdir, timed_out, seen))
    return results, events, sorted(p.name for p in outdir.iterdir()), seen


def test_an_exit_dump_under_way_at_the_timeout_is_given_up_and_the_exit_goes_on(
        tmp_path: Path, outdir: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(signalwatch, "LET_GO_PATIENCE", PATIENCE)
    child = subprocess.Popen([sys.executable, "-c", EXITER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"

        def exit_now() -> None:
            child.stdin.write("exit\n")  # type: ignore[union-attr]
            child.stdin.flush()  # type: ignore[union-attr]

        results, events, left, seen = watched_to_the_timeout(child.pid, dumplib.ProcessExit(), outdir, exit_now)
        code = child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdin.close()  # type: ignore[union-attr]
        child.stdout.close()  # type: ignore[union-attr]
    names = [e.event for e in events]
    assert seen, f"the dump at the exit never wrote its temporary: {names}"
    assert left == [], f"watch() returned with {left} in the directory: the dump at the exit was left running"
    assert results == [] and "dumped" not in names, names
    assert "abandoned" in names and names.index("timeout") < names.index("abandoned"), names
    abandoned = next(e for e in events if e.event == "abandoned")
    assert abandoned.error["reason"] == "cancelled" and f"timeout ({TIMEOUT:g} s)" in (abandoned.message or ""), \
        abandoned
    assert code == 3  # its parent (this test) sees the exit the process chose


def test_a_hand_over_dump_under_way_at_the_timeout_is_given_up_and_the_signal_delivered(
        handover_exe: Path, tmp_path: Path, outdir: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(signalwatch, "LET_GO_PATIENCE", PATIENCE)
    side = tmp_path / "handler.txt"
    proc = subprocess.Popen([str(handover_exe), str(side), "32"], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        json.loads(proc.stdout.readline())
        results, events, left, seen = watched_to_the_timeout(proc.pid, dumplib.SignalReceived("USR1"), outdir,
                                                             lambda: os.kill(proc.pid, signal.SIGUSR1))
        names = [e.event for e in events]  # as watch() returns: an event after it is one the watch left behind
        assert seen, f"the dump at the signal never wrote its temporary: {names}"
        assert left == [] and results == [] and "dumped" not in names, (left, names)
        assert "abandoned" in names and names.index("timeout") < names.index("abandoned"), names
        # Let go, untraced, and its signal delivered once as this test sent it.
        assert wait_for(lambda: proc_status(proc.pid)["TracerPid"] == "0"
                        and proc_status(proc.pid)["State"][0] in "RS"), proc_status(proc.pid)
        assert wait_for(lambda: side.exists() and side.read_text() != "")
        assert side.read_text().splitlines() == [f"signo={int(signal.SIGUSR1)} code=0 pid={os.getpid()}"]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
