"""The injected clone() of a snapshot runs in a thread of the target, at that thread's priority; it is
raised to the stop's priority (backend.STOP_NICE, which dumplib's tracer runs at) for the call and put
back before the target is let go. Read from the kernel: the clone inherits the nice value its parent
thread had at the clone() (so the clone's /proc stat shows the priority the call ran at), and the
target's threads' own values are read after the dump."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List

import pytest

import dumplib
from dumplib._linux.backend import STOP_NICE
from linuxrig import run_target

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="raising a priority needs CAP_SYS_NICE (root)")


def _nice(pid: int, tid: int) -> int:
    stat = Path(f"/proc/{pid}/task/{tid}/stat").read_bytes()
    return int(stat[stat.rindex(b")") + 2:].split()[16])  # field 19 of stat: nice


def _children(pid: int) -> List[int]:
    kids: List[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def _set_nice_everywhere(pid: int, nice: int) -> List[int]:
    tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    for tid in tids:
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    return tids


@pytest.mark.parametrize("target_nice", [5, STOP_NICE - 5])
def test_the_clone_runs_at_the_stops_priority_and_the_target_gets_its_own_back(target_exe, tmp_path, target_nice):
    seen: List[int] = []

    def progress(done: int, elapsed: float) -> None:
        if not seen:  # the copy from the clone: it is held, stopped, as the target's child
            seen.extend(_nice(kid, kid) for kid in _children(t.pid))

    with run_target([str(target_exe), "--heap", "16", "--threads", "3"]) as t:
        tids = _set_nice_everywhere(t.pid, target_nice)
        result = dumplib.create_dump(t.pid, str(tmp_path / "t.core"), "full", snapshot=True, sidecar=False,
                                     progress=progress)
        assert result.snapshot, result.warnings
        assert len(seen) == 1, f"one clone expected while its memory was copied, saw nice values {seen}"
        # Raised to the stop's priority, never lowered below the target's own.
        assert seen[0] == min(target_nice, STOP_NICE)
        assert {tid: _nice(t.pid, tid) for tid in tids} == {tid: target_nice for tid in tids}
