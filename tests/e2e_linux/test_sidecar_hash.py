"""The sidecar's sha256 is computed behind the writer at idle priority while the target is stopped.

The target's state and the hasher's scheduling policy are read from the kernel (/proc) from inside
the dump's own progress callback, which the writer calls while the target is stopped; the hash is
checked with sha256sum.
"""
from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import dumplib
from linuxrig import run_target

SCHED_IDLE = 5


def _policy(tid: int) -> int:
    stat = Path(f"/proc/self/task/{tid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[38])


def _states(pid: int) -> set:
    states = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        states.add(stat[stat.rindex(")") + 2])
    return states


def test_hasher_is_idle_while_the_target_is_stopped(target_exe, tmp_path):
    seen = []

    def progress(written: int, elapsed: float) -> None:
        hashers = [t.native_id for t in threading.enumerate() if t.name == "dumplib-sha256"]
        seen.append((_states(target), [_policy(t) for t in hashers if t]))

    with run_target([str(target_exe), "--heap", "256"]) as t:
        target = t.pid
        result = dumplib.create_dump(t.pid, tmp_path / "x.core", "full", progress=progress)
        t.assert_running_untraced()
    during_stop = [policies for states, policies in seen if states == {"t"}]
    assert during_stop, f"no progress call came while the target was stopped: {seen}"
    assert all(p == [SCHED_IDLE] for p in during_stop), during_stop
    sidecar = json.loads(Path(result.path + ".json").read_text())
    real = subprocess.run(["sha256sum", result.path], capture_output=True, text=True, check=True).stdout.split()[0]
    assert sidecar["sha256"] == real == result.sha256
