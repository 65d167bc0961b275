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

TARGET = ("import signal, time\nsignal.signal(signal.SIGUSR1, lambda *a: None)\n"
          "print('ready', flush=True)\ntime.sleep(300)\n")


def test_the_last_dumps_event_comes_before_done_however_slow_its_receiver(tmp_path: Path) -> None:
    target = subprocess.Popen([sys.executable, "-c", TARGET], stdout=subprocess.PIPE, text=True)
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
        assert target.poll() is None  # the signal was delivered to its handler, the target runs on
    finally:
        target.kill()
        target.wait()
