"""A snapshot of a process with thousands of threads would stop it longer than a normal dump: auto falls back.

A snapshot stops the target a second time (to reap its clone), and that stop costs what stopping every
thread did; with 3000 threads and little memory, reading the memory in place is far quicker. Decided
from what the first stop cost and the bytes to read, not from a thread count; checked here by what
the dump did (no snapshot, a warning saying why, every thread in the core), not by timing it.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import dumplib
from linuxrig import assert_running_untraced, have, run_target
from snapattack import children

THREADS = 3000


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
