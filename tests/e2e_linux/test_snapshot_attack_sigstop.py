"""A SIGSTOP sent while a snapshot dump holds the target stopped must stop it once it is let go.

SIGSTOP cannot be blocked, so the thread made to run the injected clone() dequeues it on its way
there (a signal-delivery-stop); the injector records it in Injector.pending_signal and resumes the
thread without it, and nothing ever delivers it again: the target that was told to stop runs on.
A normal dump keeps it pending, and the target stops when it is let go (the control case)."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import dumplib
from snapattack import build, status

ROUNDS = 5


@pytest.mark.parametrize("snapshot", [False, True], ids=["normal", "snapshot"])
def test_sigstop_sent_during_the_pause_stops_the_target_after_it(tmp_path: Path, snapshot: bool) -> None:
    stopper = build(tmp_path, "attack_stopper.c")
    proc = subprocess.Popen(["sleep", "600"])
    try:
        time.sleep(0.2)
        for i in range(ROUNDS):
            sender = subprocess.Popen([str(stopper), str(proc.pid), str(int(signal.SIGSTOP))],
                                      stdout=subprocess.PIPE, text=True)
            time.sleep(0.05)  # the sender is polling before the dump starts
            res = dumplib.create_dump(proc.pid, str(tmp_path / f"{i}.core"), "mini", snapshot=snapshot,
                                      sidecar=False)
            os.remove(res.path)
            assert sender.communicate(timeout=30)[0].strip() == "sent", "the SIGSTOP was not sent during the dump"
            assert res.snapshot is snapshot
            deadline = time.monotonic() + 5
            while not status(proc.pid)["State"].startswith("T") and time.monotonic() < deadline:
                time.sleep(0.01)
            state = status(proc.pid)["State"]
            assert state.startswith("T"), f"round {i}: SIGSTOP sent during the dump was lost; the target is {state}"
            assert status(proc.pid)["TracerPid"] == "0"
            os.kill(proc.pid, signal.SIGCONT)
            deadline = time.monotonic() + 5
            while status(proc.pid)["State"].startswith("T") and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
