"""Two hand-overs back to back on a real process: the signal the first one took and re-queued must
reach the handler once, with the siginfo it was sent with, even when the second hand-over starts
before the thread has run to the re-queued copy (what a loaded machine does to a launched watch
that samples and takes signals at once)."""
from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, List

import pytest

import dumplib
from dumplib._linux.signalwatch import SignalWatcher
from linuxrig import build_source, handler_lines

pytestmark = pytest.mark.linux
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def signal_exe(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    return build_source(tmp_path_factory.mktemp("sigbin"), HERE / "signal_target.c", name="dlw-handover")


def test_a_second_hand_over_right_after_a_signal_never_delivers_the_watchers_copy(signal_exe: Path,
                                                                                 tmp_path: Path) -> None:
    side = tmp_path / "handler.txt"
    # One thread: with a second one, that thread could start the hand-over's group-stop first and the stop
    # would then come before the stray copy (a race the test would only sometimes win).
    proc = subprocess.Popen([str(signal_exe), str(side), "--one-thread"], stdout=subprocess.PIPE, text=True)
    watcher: Any = None
    try:
        assert proc.stdout is not None
        json.loads(proc.stdout.readline())
        assert len(os.listdir(f"/proc/{proc.pid}/task")) == 1
        results: List[object] = []
        second: List[threading.Thread] = []

        def take_first() -> object:
            # While the process is handed over for the signal, ask for another hand-over (as a sampled
            # trigger does from the watch's own thread); the tracer serves it as soon as this one ends.
            t = threading.Thread(target=lambda: results.append(watcher.dump_now(take_second)), daemon=True)
            t.start()
            second.append(t)
            deadline = time.monotonic() + 30
            while not watcher._mailbox.waiting and time.monotonic() < deadline:
                time.sleep(0.001)
            assert watcher._mailbox.waiting, "the second hand-over was never asked for"
            return dumplib.create_dump(proc.pid, tmp_path / "at-signal.core", "mini", sidecar=False)

        def take_second() -> object:
            return dumplib.create_dump(proc.pid, tmp_path / "sampled.core", "mini", sidecar=False)

        def fire(pid: int, firing: object, hand_over: Any) -> None:
            if not results:
                results.append(hand_over(take_first))

        watcher = SignalWatcher(proc.pid, [dumplib.SignalReceived("TERM")], fire)
        watcher.start()
        os.kill(proc.pid, signal.SIGTERM)
        got = handler_lines(side, 1, within=30)
        deadline = time.monotonic() + 30
        while (not second or second[0].is_alive()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(results) == 2, results
        time.sleep(0.3)  # a stray copy would arrive now
        got = handler_lines(side, 2, within=0.5)
        # Delivered once, as sent: SI_USER (0) from this test's pid; never SI_TKILL (-6) from the watcher.
        assert got == [f"signo=15 code=0 pid={os.getpid()}\n"], got
    finally:
        if watcher is not None:
            watcher.stop()
        proc.kill()
        proc.wait()


def test_another_signal_taken_before_the_re_queued_one_leaves_its_siginfo_alone(signal_exe: Path,
                                                                                tmp_path: Path) -> None:
    """A SIGUSR1 queued to the signalled thread while it is handed over is taken before the re-queued
    SIGTERM (the lower number goes first): passing it through must not cost the SIGTERM its siginfo.
    (Under load the hand-over's own SIGCONT did this: the SIGTERM then arrived as SI_TKILL, -6.)"""
    side = tmp_path / "handler.txt"
    proc = subprocess.Popen([str(signal_exe), str(side)], stdout=subprocess.PIPE, text=True)
    watcher: Any = None
    tgkill = ctypes.CDLL(None, use_errno=True).tgkill
    try:
        assert proc.stdout is not None
        json.loads(proc.stdout.readline())
        results: List[object] = []

        def fire(pid: int, firing: Any, hand_over: Any) -> None:
            tid = firing.event.tid

            def take() -> object:
                assert tgkill(pid, tid, signal.SIGUSR1) == 0  # the process is stopped: it waits with the rest
                return dumplib.create_dump(pid, tmp_path / "at-signal.core", "mini", sidecar=False)

            results.append(hand_over(take))

        watcher = SignalWatcher(proc.pid, [dumplib.SignalReceived("TERM")], fire)
        watcher.start()
        os.kill(proc.pid, signal.SIGTERM)
        got = handler_lines(side, 2, within=30)
        time.sleep(0.3)  # a stray copy would arrive now
        got = handler_lines(side, 3, within=0.5)
        assert len(results) == 1
        # Both handlers' frames are set up in one return to user mode: the last one taken runs first.
        assert sorted(got) == [f"signo=10 code=-6 pid={os.getpid()}\n", f"signo=15 code=0 pid={os.getpid()}\n"], got
    finally:
        if watcher is not None:
            watcher.stop()
        proc.kill()
        proc.wait()
