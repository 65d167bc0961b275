"""dumplib SIGKILLed while a snapshot's clone() is being injected must not kill the target.

Between the injected call and the put-back the thread holds the injected registers (instruction
pointer in [vdso], a full signal mask). Only the tracer can put them back; SIGKILLed (the OOM
killer, `kill -9`, systemd's last resort, `timeout -s KILL`), dumplib takes that knowledge with it,
the kernel detaches the thread and it runs on from the injected state: here it dies of SIGSEGV on
the first try. The issue asks that the target survive the dumper being killed at any point."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from linuxrig import assert_running_untraced
from snapattack import build

ROUNDS = 5


def test_dumper_sigkilled_the_moment_the_clone_exists_leaves_the_target_alive(tmp_path: Path) -> None:
    killer = build(tmp_path, "attack_child_killer.c")
    target = subprocess.Popen(["sleep", "600"])
    try:
        time.sleep(0.2)
        for i in range(ROUNDS):
            dumper = subprocess.Popen([sys.executable, "-m", "dumplib_cli", "dump", str(target.pid), str(tmp_path),
                                       "-k", "mini", "--snapshot"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            kill = subprocess.Popen([str(killer), str(target.pid), str(dumper.pid)], stdout=subprocess.PIPE,
                                    text=True)
            dumper.wait(60)
            try:
                said = kill.communicate(timeout=5)[0].strip()
            except subprocess.TimeoutExpired:  # the dump ended before any child was seen
                kill.kill()
                said = kill.communicate()[0].strip()
            time.sleep(0.3)
            assert target.poll() is None, f"round {i}: the target died ({target.returncode}) when dumplib was killed"
            if said == "killed":
                assert_running_untraced(target.pid)
    finally:
        target.kill()
        target.wait()
