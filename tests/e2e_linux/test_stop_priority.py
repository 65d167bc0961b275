"""While the target is stopped, dumplib's writing thread runs at a raised priority; never otherwise.

On a loaded host the stop is the target's outage, and a nice-0 thread copying its memory gets only a
share of a CPU. Read from the kernel (getpriority of the thread, the target's task states in /proc)
inside the dump's own progress callback, which the writer calls as it copies: no timing.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import dumplib
from helpers import require
from linuxrig import run_target


def _states(pid: int) -> set:
    states = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        states.add(stat[stat.rindex(")") + 2])
    return states


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def _dump(target_exe, tmp_path, **options):
    require(os.geteuid() == 0, "raising a thread's priority needs CAP_SYS_NICE")
    seen = []
    before = _nice()
    assert before >= 0, "the test runs at a raised priority already"

    def progress(written: int, elapsed: float) -> None:
        seen.append((_states(target), _nice()))

    with run_target([str(target_exe), "--heap", "256"]) as t:
        target = t.pid
        dumplib.create_dump(t.pid, tmp_path / "x.core", "full", sidecar=False, progress=progress, **options)
        t.assert_running_untraced()
    assert _nice() == before, "the priority was not put back after the dump"
    return before, seen


def test_the_copy_runs_at_raised_priority_while_the_target_is_stopped(target_exe, tmp_path):
    before, seen = _dump(target_exe, tmp_path)
    during_stop = [nice for states, nice in seen if states == {"t"}]
    assert during_stop, f"no progress call came while the target was stopped: {seen}"
    assert all(nice < before for nice in during_stop), during_stop


def test_a_snapshots_copy_runs_at_the_callers_priority_once_the_target_runs(target_exe, tmp_path):
    before, seen = _dump(target_exe, tmp_path, snapshot=True)
    running = [nice for states, nice in seen if "t" not in states]
    assert running, f"no progress call came while the target ran: {seen}"
    assert all(nice == before for nice in running), running
