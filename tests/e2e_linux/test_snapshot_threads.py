"""A snapshot of a process with thousands of threads would stop it longer than a normal dump: auto falls back.

A snapshot stops the target a second time (to reap its clone), and that stop costs what stopping every
thread did; with 3000 threads and little memory, reading the memory in place is far quicker. Decided
from what the first stop cost and the bytes to read, not from a thread count; checked here by what
the dump did (no snapshot, a warning saying why, every thread in the core), not by timing it.

The rule takes a snapshot whatever the estimate when the stop costs under LONGER_STOP_FLOOR (0.25 s).
Stopping 3000 threads costs 0.2-0.3 s on a quiet 2-core machine, right at the floor, so the test once
failed on a quiet CI run; 6000 threads cost 0.40-0.46 s there (and more under load, which only slows
the stop). The rule's arithmetic is tested apart in tests/unit/test_snapshot_stop_rule.py.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import dumplib
from linuxrig import assert_running_untraced, have, run_target
from snapattack import children

THREADS = 6000


def test_auto_snapshot_of_thousands_of_threads_falls_back_to_a_normal_dump(target_exe, tmp_path: Path):
    with run_target([str(target_exe), "--threads", str(THREADS)]) as t:
        res = dumplib.create_dump(t.pid, str(tmp_path / "many.core"), "mini", snapshot="auto", sidecar=False)
        assert res.snapshot is False, f"a snapshot was taken of {THREADS} threads: {res.warnings}"
        assert any("threads" in w and "reap the snapshot" in w for w in res.warnings), res.warnings
        assert_running_untraced(t.pid)
        assert children(t.pid) == []
    if have("readelf"):
        notes = subprocess.run(["readelf", "-n", res.path], capture_output=True, text=True, check=True).stdout
        assert notes.count("NT_PRSTATUS") == THREADS + 1, notes.count("NT_PRSTATUS")


STRICT_TARGET = r"""
#include <linux/seccomp.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
static int fds[2];
static void *strict(void *arg) {
    char c;
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT)) return arg;
    syscall(SYS_read, fds[0], &c, 1);  /* waits here; read is allowed in strict mode */
    syscall(SYS_exit, 0);               /* exit (not exit_group) is allowed too */
    return arg;
}
int main(void) {
    pthread_t t;
    char line[8];
    if (pipe(fds)) return 1;
    pthread_create(&t, NULL, strict, NULL);
    usleep(200000);
    printf("{\"pid\": %d}\n", getpid());
    fflush(stdout);
    return fgets(line, sizeof line, stdin) == NULL;
}
"""


def test_a_thread_in_seccomp_strict_mode_gets_no_snapshot(tmp_path: Path):
    """Each thread's seccomp mode is read as it stops (with its signal sets), not read again: a
    strict-mode thread still refuses a snapshot (True) and makes auto fall back, naming the thread."""
    from linuxrig import build_c

    exe = build_c(tmp_path, "strict_target", STRICT_TARGET)
    with run_target([str(exe)]) as t:
        strict = [tid for tid in os.listdir(f"/proc/{t.pid}/task")
                  if "Seccomp:\t1" in Path(f"/proc/{t.pid}/task/{tid}/status").read_text()]
        assert len(strict) == 1, "the target's thread did not enter strict mode"
        with pytest.raises(dumplib.TargetRefused) as refused:
            dumplib.create_dump(t.pid, str(tmp_path / "x.core"), "mini", snapshot=True, sidecar=False)
        assert "strict" in str(refused.value) and strict[0] in str(refused.value), str(refused.value)
        res = dumplib.create_dump(t.pid, str(tmp_path / "auto.core"), "mini", snapshot="auto", sidecar=False)
        assert res.snapshot is False and any("strict" in w for w in res.warnings), res.warnings
        assert_running_untraced(t.pid)
        assert children(t.pid) == []
