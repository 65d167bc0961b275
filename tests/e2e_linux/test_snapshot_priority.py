"""The injected clone() of a snapshot runs in a thread of the target, at that thread's priority; it is
raised to the stop's priority (backend.STOP_NICE, which dumplib's tracer runs at) for the call and put
back before the target is let go. Read from the kernel: the clone inherits the nice value its parent
thread had at the clone() (so the clone's /proc stat shows the priority the call ran at), and the
target's threads' own values are read after the dump."""
from __future__ import annotations

import json
import os
import sys
import time
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
    tracers: List[bytes] = []

    def progress(done: int, elapsed: float) -> None:
        if not seen:  # the copy from the clone: it is held, stopped, as the target's child
            seen.extend(_nice(kid, kid) for kid in _children(t.pid))
            for kid in _children(t.pid):  # its tracer: the snapshot's helper, in a session of its own
                status = Path(f"/proc/{kid}/status").read_text()
                tracer = int(status.split("TracerPid:")[1].split()[0])
                tracers.append(Path(f"/proc/{tracer}/autogroup").read_bytes())

    with run_target([str(target_exe), "--heap", "16", "--threads", "3"]) as t:
        tids = _set_nice_everywhere(t.pid, target_nice)
        result = dumplib.create_dump(t.pid, str(tmp_path / "t.core"), "full", snapshot=True, sidecar=False,
                                     progress=progress)
        assert result.snapshot, result.warnings
        assert len(seen) == 1, f"one clone expected while its memory was copied, saw nice values {seen}"
        # Raised to the stop's priority, never lowered below the target's own.
        assert seen[0] == min(target_nice, STOP_NICE)
        assert {tid: _nice(t.pid, tid) for tid in tids} == {tid: target_nice for tid in tids}
    if Path("/proc/self/autogroup").exists():
        # The helper's own autogroup (its session's, no one else's) at the stop's nice: it weighs
        # against other sessions' load as much as its thread does inside it.
        assert len(tracers) == 1 and tracers[0].split()[2] == str(STOP_NICE).encode(), tracers
        assert tracers[0].split()[0] not in (Path("/proc/self/autogroup").read_bytes().split()[0],)


#: A process in the target's session that reads its own autogroup's nice (the target's: one session,
#: one group) as fast as it can, and writes every value it saw change to, once told to stop.
AUTOGROUP_SAMPLER = r"""
import json, os, sys, time
out, ready, stop = sys.argv[1:4]
fd = os.open("/proc/self/autogroup", os.O_RDONLY)
seen = []
def nice():
    os.lseek(fd, 0, 0)
    return int(os.read(fd, 256).split()[2])
seen.append(nice())
open(ready, "w").close()
deadline = time.monotonic() + 120
while not os.path.exists(stop) and time.monotonic() < deadline:
    for _ in range(200):
        value = nice()
        if value != seen[-1]:
            seen.append(value)
with open(out + ".tmp", "w") as f:
    json.dump(seen, f)
os.rename(out + ".tmp", out)
"""


def _wait_for(path: Path, what: str) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert time.monotonic() < deadline, f"{what} did not appear within 60 s"
        time.sleep(0.01)


def _autogroup_nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/autogroup").read_bytes().split()[2])


@pytest.mark.skipif(not Path("/proc/self/autogroup").exists(), reason="a kernel with no autogroups (CONFIG_SCHED_AUTOGROUP)")
@pytest.mark.parametrize("group_nice", [3, STOP_NICE - 5])
def test_the_clone_runs_with_the_targets_autogroup_raised_and_the_group_gets_its_own_back(target_exe, tmp_path, group_nice):
    # The target in a session of its own, as a service is; the sampler its child in that session.
    out, ready, stop = tmp_path / "seen.json", tmp_path / "ready", tmp_path / "stop"
    sampler = f"{sys.executable} -c '{AUTOGROUP_SAMPLER}' {out} {ready} {stop} </dev/null >/dev/null 2>&1 &"
    with run_target(["sh", "-c", f"{sampler} exec {target_exe} --heap 512 --threads 2"], preexec=os.setsid) as t:
        try:
            _wait_for(ready, "the sampler's start")
            Path(f"/proc/{t.pid}/autogroup").write_text(str(group_nice))
            result = dumplib.create_dump(t.pid, str(tmp_path / "t.core"), "full", snapshot=True, sidecar=False)
            assert result.snapshot, result.warnings
            after = _autogroup_nice(t.pid)
        finally:
            stop.touch()
        _wait_for(out, "the sampler's report")
    seen = json.loads(out.read_text())
    # The group's own value, then the stop's during the clone() (never lower than the group's own),
    # then its own again before the target runs (read from the kernel after the dump).
    assert after == group_nice
    if group_nice > STOP_NICE:
        assert STOP_NICE in seen, f"the sampler saw the target's autogroup at {seen} only"
        assert seen[-1] == group_nice
    else:
        assert STOP_NICE not in seen and min(seen[1:] or [group_nice]) >= group_nice, seen
