"""The postmortem handler and a crashed process whose mmap lock is held for good (#16).

The rig of test_stuck_mmap_lock: the target maps a file of a stalling FUSE mount; another process
reads a page of that mapping through /proc/PID/mem and waits in the kernel holding the target's mmap
lock for read; a process sharing the target's memory (CLONE_VM, its own thread group, so the crash
does not kill it) queues behind it as a writer. Then the target crashes. The kernel starts the
handler, and its own core of the process waits behind the lock too.

The handler reads the crashed process's command line and smaps, which take that lock. Unbounded, it
slept there until its watchdog alarm (--max-seconds + 15 s) killed it: nothing was logged, and the
crashed process's dump went on only when the mount answered. Now each read is given up on after 5 s,
a mini crash is logged `memory-map-locked` and the handler ends; the crashed process itself ends once
the lock comes free (its core and its exit both take it; measured: even SIGKILL leaves it in do_exit).
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from helpers import private_state, require
from test_postmortem import installed, log_records
from test_stuck_mmap_lock import rig, target_exe  # noqa: F401 - target_exe is a fixture used here

pytestmark = pytest.mark.linux

#: The handler's watchdog fires at --max-seconds + 15 s; the log is awaited for less than that, so a
#: handler that sleeps on the lock until the watchdog ends it (with no line) fails the test.
MAX_SECONDS = 120
LOG_WAIT = 90


def test_a_mini_crash_whose_memory_map_is_locked_is_logged_and_let_go(target_exe, tmp_path: Path) -> None:  # noqa: F811
    require(os.geteuid() == 0, "the postmortem handler is installed as root")
    require(os.path.exists("/dev/fuse"), "/dev/fuse is missing: no FUSE file system can be mounted")
    dumps = tmp_path / "crashes"
    dumps.mkdir(mode=0o700)
    state = private_state(tmp_path)
    with rig(tmp_path, target_exe) as r:
        r.hold()
        os.kill(int(r.t.info["sibling"]), signal.SIGUSR1)  # type: ignore[arg-type]  # a writer queues
        r.wait_stuck()
        with installed(state, dumps, "--kind", "mini", "--max-seconds", str(MAX_SECONDS)):
            started = time.monotonic()
            os.kill(r.t.pid, signal.SIGSEGV)
            records = log_records(state, wait_for=1, timeout=LOG_WAIT)
            waited = time.monotonic() - started
            assert records, (f"no log line {waited:.0f} s after the crash: the handler waits on the crashed"
                             " process's mmap lock")
            [record] = records
            assert record["pid"] == r.t.pid and record["outcome"] == "memory-map-locked", record
            assert record["maps_locked"] is True and "memory map" in record["why"], record
            assert record["read_bytes"] == 0, record  # the kernel's stream was not waited for
            assert sorted(p.name for p in dumps.iterdir()) == [], list(dumps.iterdir())
            assert r.holder is not None and r.holder.poll() is None, "the mount answered: it proves nothing"
        r.release()
        # Once the mount answers, the kernel's own core goes on into the closed pipe and the process ends
        # (its core and its exit both wait for the lock: nothing could end it sooner).
        r.t.proc.wait(60)
        assert r.t.proc.returncode == -signal.SIGSEGV, r.t.proc.returncode
