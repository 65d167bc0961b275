"""A snapshot's helper process (snapshot/remote.py) that died must not take its host with it: an order
sent to it afterwards fails as DumpFailed ("ended unexpectedly"), in a host that set SIGPIPE to
SIG_DFL (an embedding program) as in one that ignores it (Python's default), where a raw
BrokenPipeError outside dumplib's error hierarchy came out before. Real helper, real kill, real
signal disposition; the target is let go (the kernel detaches a dead tracer's tracees)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

HOST = r"""
import os, signal, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
if sys.argv[2] == "default":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
from dumplib.errors import DumpFailed
from dumplib._linux.snapshot.remote import RemoteStoppedProcess
target = subprocess.Popen(["sleep", "60"])
stopped = RemoteStoppedProcess(target.pid)
stopped.__enter__()
os.kill(stopped._proc.pid, signal.SIGKILL)
stopped._proc.wait(timeout=30)
try:
    stopped.check_pause()
except DumpFailed as exc:
    print("DumpFailed", "ended unexpectedly" in exc.message)
except BaseException as exc:
    print("other", type(exc).__name__)
else:
    print("no error")
stopped.release()
deadline = time.monotonic() + 10
while open(f"/proc/{target.pid}/stat").read().rsplit(")", 1)[1].split()[0] in "tT" and time.monotonic() < deadline:
    time.sleep(0.01)
print("state", open(f"/proc/{target.pid}/stat").read().rsplit(")", 1)[1].split()[0])
target.kill()
"""


@pytest.mark.parametrize("sigpipe", ["default", "ignored"])
def test_an_order_to_a_dead_helper_is_dumpfailed_and_never_kills_the_host(sigpipe: str) -> None:
    done = subprocess.run([sys.executable, "-c", HOST, str(ROOT), sigpipe], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr)  # -13: SIGPIPE killed the host
    lines = done.stdout.split("\n")
    assert lines[0] == "DumpFailed True", done.stdout + done.stderr
    assert lines[1].startswith("state ") and lines[1][6:] not in ("t", "T"), done.stdout  # it runs on: let go
