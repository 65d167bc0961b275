"""A target that calls execve while its snapshot is being written.

The snapshot is the target's child, and stays so across an execve. Once the dump is read the
target is stopped again and made to reap it with wait4() run at a `syscall` instruction: the one
found in the old image's [vdso] would now be unmapped (or someone else's code). Run there, the
thread faults with every signal blocked, so the kernel resets its SIGSEGV handler to the default,
the tracer resumes it onto the same fault forever, and when dumplib gives up (30 s) the target
dies of SIGSEGV; dumplib exits 0 and says nothing."""
from __future__ import annotations

import json
from pathlib import Path

from linuxrig import assert_running_untraced
from snapattack import HeldSnapshot, build, children, started


def test_target_that_execs_while_its_snapshot_is_written_survives_and_reaps_it(tmp_path: Path) -> None:
    exe = build(tmp_path, "attack_exec_target.c")
    with started(exe) as proc:
        pid = int(proc.stdout.readline())
        with HeldSnapshot(pid) as held:
            clone = held.wait_target_running()
            proc.stdin.write("exec\n")
            proc.stdin.flush()
            assert proc.stdout.readline().split() == ["again", str(pid)]
            assert children(pid) == [clone], "the snapshot is no longer the target's child after its execve"
            err = held.finish()
            assert proc.poll() is None, f"the target died ({proc.returncode}) when its snapshot was dropped: {err}"
            proc.stdin.write("report\n")
            proc.stdin.flush()
            report = json.loads(proc.stdout.readline())
            assert report == {"handler": 1, "waitpid": -1}, \
                f"after the dump the target's SIGSEGV handler or children changed: {report}; dumplib said: {err}"
            assert_running_untraced(pid)
