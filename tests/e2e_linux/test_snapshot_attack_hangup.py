"""dumplib's terminal going away (SIGHUP) while a snapshot is written must not leave the clone behind.

The CLI turns SIGTERM and Ctrl-C into a clean exit (the tracer kills the clone and has the target
reap it); SIGHUP, what closing an ssh session or terminal sends, keeps its default action and kills
dumplib outright: the clone is left as a zombie child of the target for as long as the target lives
(and, landing during the clone() injection, the same death kills the target:
test_snapshot_attack_dumper_killed.py). The controls are the signals the CLI already handles."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from linuxrig import assert_running_untraced
from snapattack import HeldSnapshot, build, children, started, status


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_dumper_signalled_while_its_snapshot_lives_leaves_the_target_without_children(tmp_path: Path, sig) -> None:
    exe = build(tmp_path, "attack_exec_target.c")
    with started(exe) as proc:
        pid = int(proc.stdout.readline())
        with HeldSnapshot(pid) as held:
            held.wait_target_running()
            os.kill(held.proc.pid, sig)
            held.proc.wait(60)
            time.sleep(0.2)
            left = [(c, status(c)["State"]) for c in children(pid)]
            assert left == [], \
                f"dumplib ended by {sig.name} (exit {held.proc.returncode}) left the target children {left}"
            assert held.proc.returncode == 128 + sig, f"dumplib ended by {sig.name} exited {held.proc.returncode}"
            assert_running_untraced(pid)
