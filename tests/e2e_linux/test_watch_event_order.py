"""A watch's events come in the order things happened: the last dump's "dumped" before "done".

An event source (here the signal watcher's tracer thread) dumps on its own thread, while the main loop
ends the watch once every process has its dumps. The dump used to be counted before its event was
emitted, so under load the main loop said "done" and returned first: `watch --json` printed "done"
and exited, the "dumped" after it or never (seen under Wine, the debug loop's thread, at load). Here
the "dumped" event's receiver takes a second, which used to let "done" in ahead of it every time."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest

import dumplib

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux: the signal watcher")

TARGET = ("import signal, sys, time\n"
          "if sys.argv[1] == 'handled': signal.signal(signal.SIGUSR1, lambda *a: None)\n"
          "print('ready', flush=True)\ntime.sleep(300)\n")


@pytest.mark.parametrize("fate", ["handled", "fatal"])
def test_the_last_dumps_event_comes_before_done_however_slow_its_receiver(tmp_path: Path, fate: str) -> None:
    """*fatal*: the target dies of the very signal dumped (--signal TERM/ABRT/SEGV's use). The main loop
    then saw it gone and said "exited" and "done" while the "dumped" was still being told, and watch()
    returned without that dump: it now waits for a dump under way before judging its process."""
    target = subprocess.Popen([sys.executable, "-c", TARGET, fate], stdout=subprocess.PIPE, text=True)
    try:
        assert target.stdout is not None and target.stdout.readline().strip() == "ready"
        seen: List[str] = []

        def on_event(event: dumplib.WatchEvent) -> None:
            if event.event == "watching":
                subprocess.run(["kill", "-USR1", str(target.pid)], check=True)
            if event.event == "dumped":
                time.sleep(1.0)  # a slow receiver: a pipe to a busy reader, a logger, a hook
            seen.append(event.event)

        results = dumplib.watch(target.pid, dumplib.SignalReceived("USR1"), path=tmp_path, kind="mini",
                                sample_every=0.05, timeout=120, on_event=on_event)
        assert len(results) == 1 and Path(results[0].path).exists(), seen
        assert seen[-1] == "done", seen
        assert seen.index("dumped") < seen.index("done"), seen
        if fate == "handled":
            assert target.poll() is None  # the signal was delivered to its handler, the target runs on
        else:
            assert target.wait(30) == -10, target.returncode  # delivered after its dump: it died of it
            assert "exited" not in seen or seen.index("dumped") < seen.index("exited"), seen
    finally:
        target.kill()
        target.wait()


def test_the_interval_runs_from_the_dumps_end_not_from_its_receivers(tmp_path: Path) -> None:
    """count=2, interval=2: a second USR1 2.5 s after the first dump ended is dumped, however long the
    first "dumped" receiver (a hook, a logger) took: 3 s here. Counted from the receiver's end, it was
    "skipped: within 2 s of the previous dump", which was untrue."""
    target = subprocess.Popen([sys.executable, "-c", TARGET, "handled"], stdout=subprocess.PIPE, text=True)
    try:
        assert target.stdout is not None and target.stdout.readline().strip() == "ready"
        seen: List[str] = []

        def on_event(event: dumplib.WatchEvent) -> None:
            seen.append(event.event)
            if event.event == "watching":
                subprocess.run(["kill", "-USR1", str(target.pid)], check=True)
            if event.event == "dumped" and seen.count("dumped") == 1:
                time.sleep(2.5)
                subprocess.run(["kill", "-USR1", str(target.pid)], check=True)  # 2.5 s after the dump's end
                time.sleep(0.5)

        results = dumplib.watch(target.pid, dumplib.SignalReceived("USR1"), path=tmp_path, kind="mini", count=2,
                                interval=2.0, sample_every=0.05, timeout=30, on_event=on_event)
        assert len(results) == 2 and "skipped" not in seen, seen
    finally:
        target.kill()
        target.wait()


TWO_SIGNALS = ("import signal, time\n"
               "signal.signal(signal.SIGUSR1, lambda *a: None)\n"
               "signal.signal(signal.SIGUSR2, lambda *a: print('usr2', flush=True))\n"
               "print('ready', flush=True)\ntime.sleep(300)\n")


def test_an_exec_hook_does_not_hold_the_targets_signals_while_it_runs(tmp_path: Path) -> None:
    """`watch --signal USR1 --exec CMD`: the hook ran on the thread that traces the target, which serves
    the target's signals; for as long as the hook ran (up to 300 s) every other signal to the target
    waited in its delivery stop. The hook runs on a thread of its own: a SIGUSR2 sent while an 8 s hook
    runs reaches the target's handler before the hook has ended, and the watch still lets the hook finish."""
    import select

    target = subprocess.Popen([sys.executable, "-c", TWO_SIGNALS], stdout=subprocess.PIPE, text=True)
    marker = tmp_path / "hook-done"
    (tmp_path / "d").mkdir()
    watcher = subprocess.Popen([sys.executable, "-m", "dumplib_cli", "watch", str(target.pid), str(tmp_path / "d"),
                                "--signal", "USR1", "--count", "2", "--interval", "0", "--timeout", "60", "--json",
                                "--exec", f"sleep 8; touch {marker}"], stdout=subprocess.PIPE, text=True)
    try:
        assert target.stdout is not None and watcher.stdout is not None
        assert target.stdout.readline().strip() == "ready"
        assert any('"watching"' in line for line in iter(watcher.stdout.readline, "")), "the watch never began"
        subprocess.run(["kill", "-USR1", str(target.pid)], check=True)
        assert any('"dumped"' in line for line in iter(watcher.stdout.readline, "")), "no first dump"
        time.sleep(0.5)  # the hook is running now (8 s)
        subprocess.run(["kill", "-USR2", str(target.pid)], check=True)
        sent = time.monotonic()
        # Bounded generously (a Python handler at load 10): what tells a held signal is the marker below,
        # which the hook touches as it ends; a signal held by the hook reaches the handler only after it.
        ready, _, _ = select.select([target.stdout], [], [], 30.0)
        assert ready and target.stdout.readline().strip() == "usr2", "SIGUSR2 held while the hook ran"
        assert not marker.exists(), "the hook ended before the signal was judged: nothing was tested"
        print(f"SIGUSR2 handled {time.monotonic() - sent:.3f} s after it was sent, the hook still running")
        subprocess.run(["kill", "-USR1", str(target.pid)], check=True)  # the second dump: the watch's end
        assert watcher.wait(60) == 0
        assert marker.exists(), "the watch ended without letting the hook finish"
    finally:
        for p in (watcher, target):
            if p.poll() is None:
                p.kill()
            p.wait()
