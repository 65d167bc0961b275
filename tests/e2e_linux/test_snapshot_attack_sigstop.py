"""A SIGSTOP sent while a snapshot dump holds the target stopped must stop it once it is let go.

SIGSTOP cannot be blocked, so the thread made to run the injected clone() dequeues it on its way
there (a signal-delivery-stop); the injector records it in Injector.pending_signal and resumes the
thread without it, and nothing ever delivers it again: the target that was told to stop runs on.
A normal dump keeps it pending, and the target stops when it is let go (the control case)."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

import dumplib
from snapattack import build, status

ROUNDS = 5
#: Dumps tried to catch ROUNDS pauses: on a loaded machine the sender may not run during a short pause
#: (it then sends nothing, and the dump proves nothing either way).
TRIES = 60


def _raise_priority() -> None:
    try:
        os.nice(-10)  # root: the sender is scheduled ahead of a loaded machine's other work
    except OSError:
        pass


@pytest.mark.parametrize("snapshot", [False, True], ids=["normal", "snapshot"])
def test_sigstop_sent_during_the_pause_stops_the_target_after_it(tmp_path: Path, snapshot: bool) -> None:
    stopper = build(tmp_path, "attack_stopper.c")
    proc = subprocess.Popen(["sleep", "600"])
    caught = tries = 0
    try:
        time.sleep(0.2)
        while caught < ROUNDS:
            tries += 1
            assert tries <= TRIES, f"the sender ran during only {caught} of {TRIES} pauses"
            sender = subprocess.Popen([str(stopper), str(proc.pid), str(int(signal.SIGSTOP))],
                                      stdout=subprocess.PIPE, text=True, preexec_fn=_raise_priority)
            assert sender.stdout is not None and sender.stdout.readline() == "ready\n"  # polling before the dump
            try:
                res = dumplib.create_dump(proc.pid, str(tmp_path / f"{tries}.core"), "mini", snapshot=snapshot,
                                          sidecar=False)
                os.remove(res.path)
                assert res.snapshot is snapshot
                refused = False
            except dumplib.TargetRefused as exc:
                # The SIGSTOP came before the injection: its one thread was on its way to that signal, so no
                # clone could be made (snapshot=True refuses, as documented). Judged all the same below (the
                # SIGSTOP must still stop it) but not counted: it does not reach the injector's re-send.
                if not (snapshot and exc.reason == "snapshot-unavailable" and "on its way to a signal" in str(exc)):
                    raise
                refused = True
            ready, _, _ = select.select([sender.stdout], [], [], 2.0)  # it saw the tracer, or it never will
            said = sender.stdout.readline() if ready else ""
            sender.kill()
            sender.wait()
            if said != "sent\n":
                assert not refused, "refused for a signal on its way, with no signal sent"
                assert status(proc.pid)["State"][0] in "RS", "the target is stopped with no SIGSTOP sent"
                continue  # the sender did not run while the target was traced: nothing was tested
            caught += 0 if refused else 1
            deadline = time.monotonic() + 10
            while not status(proc.pid)["State"].startswith("T") and time.monotonic() < deadline:
                time.sleep(0.01)
            state = status(proc.pid)["State"]
            assert state.startswith("T"), f"round {tries}: SIGSTOP sent during the dump was lost; the target is {state}"
            assert status(proc.pid)["TracerPid"] == "0"
            os.kill(proc.pid, signal.SIGCONT)
            deadline = time.monotonic() + 10
            while status(proc.pid)["State"].startswith("T") and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
