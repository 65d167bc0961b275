"""Snapshots of a process in another pid namespace (every container).

clone() returns the child's pid as the target's namespace numbers it, while ptrace's
PTRACE_EVENT_CLONE message gives it as dumplib's namespace does: the two differ in a container.
Comparing them refuses every snapshot there, and the refusal's reaping, which runs wait4() in the
target with dumplib's number, reaps nothing: each attempt left a zombie child in the target."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import dumplib
from helpers import require
from linuxrig import assert_running_untraced, have
from snapattack import children, status


def _in_new_pid_namespace():
    require(os.geteuid() == 0 and have("unshare"), "a new pid namespace needs root and unshare(1)")
    outer = subprocess.Popen(["unshare", "-p", "-f", "--kill-child", "--mount-proc", "sleep", "600"])
    deadline = time.monotonic() + 10
    while not children(outer.pid):
        assert time.monotonic() < deadline, "unshare never started its child"
        time.sleep(0.01)
    return outer, children(outer.pid)[0]


def test_snapshot_of_a_process_in_its_own_pid_namespace_is_taken_and_leaves_no_child(tmp_path: Path) -> None:
    outer, pid = _in_new_pid_namespace()
    try:
        assert status(pid)["NSpid"].split()[-1] == "1", "the target is not pid 1 of a namespace of its own"
        for i, snapshot in enumerate((True, "auto", True)):
            res = dumplib.create_dump(pid, str(tmp_path / f"{i}.core"), "mini", snapshot=snapshot, sidecar=False)
            assert res.snapshot is True, f"no snapshot of a process in a pid namespace: {res.warnings}"
            left = children(pid)
            assert left == [], f"the target has children after snapshot {i}: " + \
                "; ".join(f"{c} {status(c)['State']}" for c in left)
        assert_running_untraced(pid)
    finally:
        outer.kill()
        outer.wait()
