"""A snapshot of a CPU-throttled process (a container with a CPU limit) must not kill it.

The injected clone() runs in the target's thread, so its cgroup's CPU quota paces it: copying the
page tables of 256 MiB takes milliseconds of CPU, seconds of wall time at 1 ms per second. The
injector's step timeout (2 s plus 0.1 s per GiB resident) then runs out while the thread is still
inside clone(); the put-back's PTRACE_SETREGSET fails (ESRCH: the thread is not in a stop), the
dump falls back (auto) and reports success, and once the tracer ends the kernel detaches the
thread, which leaves clone() with the injected registers and dies."""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Iterator

import dumplib
from helpers import require
from linuxrig import assert_running_untraced
from snapattack import build, children, started


@contextlib.contextmanager
def cpu_limited(pid: int, quota_us: int, period_us: int) -> Iterator[None]:
    """*pid* in a new cpu cgroup (v1's cpu controller, or v2's cpu.max) allowed *quota_us* per *period_us*."""
    require(os.geteuid() == 0, "making a cpu cgroup needs root")
    v1 = Path("/sys/fs/cgroup/cpu")
    base = v1 if (v1 / "cpu.cfs_quota_us").exists() else Path("/sys/fs/cgroup")
    require((base / "cgroup.procs").exists(), "no cpu cgroup controller is mounted")
    cg = base / f"dumplib-attack-{os.getpid()}"
    cg.mkdir()
    try:
        if base == v1:
            (cg / "cpu.cfs_period_us").write_text(str(period_us))
            (cg / "cpu.cfs_quota_us").write_text(str(quota_us))
        else:
            (cg / "cpu.max").write_text(f"{quota_us} {period_us}")
        (cg / "cgroup.procs").write_text(str(pid))
        yield
    finally:
        with contextlib.suppress(OSError):  # back to the root cgroup, if it still lives
            (base / "cgroup.procs").write_text(str(pid))
        deadline = time.monotonic() + 10
        while True:
            try:
                cg.rmdir()
                break
            except OSError:
                assert time.monotonic() < deadline, f"cannot remove {cg}"
                time.sleep(0.05)


def test_snapshot_of_a_cpu_throttled_target_leaves_it_alive(tmp_path: Path) -> None:
    exe = build(tmp_path, "attack_heap_target.c")
    with started(exe, "256") as proc:
        pid = int(proc.stdout.readline())
        with cpu_limited(pid, 1000, 1000000):
            res = dumplib.create_dump(pid, str(tmp_path / "t.core"), "mini", snapshot="auto", sidecar=False)
            time.sleep(3)  # the throttled thread finishes its clone() and returns to user space
            assert proc.poll() is None, \
                f"the target died ({proc.returncode}) after a snapshot dump that said {res.warnings}"
            assert_running_untraced(pid)
            # The reaping stop may itself not come within the stop timeout (the thread is throttled):
            # the clone is then left a zombie, which the result must say.
            if children(pid):
                assert any("zombie" in w or "reap" in w for w in res.warnings), \
                    f"a child is left in the target and the result does not say so: {res.warnings}"
        proc.stdin.close()
        assert proc.wait(30) == 0
