"""A snapshot never injects into a thread inside a restartable sequence (rseq) critical section.

Moved out of the section for the injected clone(), the thread would have its rseq_cs cleared by the
kernel instead of being sent to its abort handler, and would finish, after a preemption, an
operation it must restart. The target's main thread spins inside a section and counts the passes
that find rseq_cs cleared while inside (the kernel's preemptions only ever abort it)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import dumplib
from linuxrig import assert_running_untraced, build_source

HERE = Path(__file__).resolve().parent


def test_no_thread_inside_an_rseq_section_is_made_to_clone(tmp_path: Path) -> None:
    exe = build_source(tmp_path, HERE / "rseq_target.c", "-O1")
    proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline().strip()
        assert first != "no-rseq", "glibc registered no rseq area here (glibc.pthread.rseq=0?)"
        pid = int(first)
        snapshots = 0
        for i in range(10):
            r = dumplib.create_dump(pid, str(tmp_path / f"{i}.core"), "mini", snapshot=True, sidecar=False)
            snapshots += r.snapshot
        proc.stdin.write("report\n")
        proc.stdin.flush()
        cleared = int(proc.stdout.readline().split()[1])
        assert snapshots == 10
        assert cleared == 0, f"the spinning thread found its rseq_cs cleared inside its section {cleared} times"
        assert_running_untraced(pid)
    finally:
        proc.kill()
        proc.wait()
