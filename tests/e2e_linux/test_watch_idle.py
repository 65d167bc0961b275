"""An idle signal watcher blocks instead of polling: counted in wake-ups of its thread, not timed.

The kernel counts each time a thread gives up the CPU of its own accord (voluntary_ctxt_switches):
a 50 ms poll wakes ~20 times a second whatever the load; a wait that blocks until SIGCHLD wakes
about once a second. A loaded machine makes a sleeping thread wake less, never more.
"""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from dumplib import SignalReceived
from dumplib._linux import signalwatch


def _wakeups(tid: int) -> int:
    for line in Path(f"/proc/self/task/{tid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError(f"no voluntary_ctxt_switches for thread {tid}")


def test_idle_signal_watcher_blocks_between_events():
    target = subprocess.Popen(["sleep", "120"])
    fired = []
    try:
        watcher = signalwatch.SignalWatcher(target.pid, [SignalReceived(signal.SIGUSR1)],
                                            lambda *a, **k: fired.append(a))
        watcher.start()
        try:
            tid = watcher._thread.native_id
            assert tid is not None
            time.sleep(0.5)  # past the first back-off steps
            before, t0 = _wakeups(tid), time.monotonic()
            time.sleep(3.0)
            woke, idle = _wakeups(tid) - before, time.monotonic() - t0
        finally:
            watcher.stop()
        assert not watcher._thread.is_alive(), "stop() did not end the tracer thread"
        # Two a second at most (a wake with its look at every thread is ~0.2 ms of CPU: 0.1% of a core
        # is ~5 a second), plus a few for GIL and scheduler hand-offs. Not from POLL_SECONDS: a test
        # that read the constant would pass with the 50 ms poll put back.
        allowed = 2 * idle + 4
        assert woke <= allowed, f"the idle tracer thread woke {woke} times in {idle:.1f} s (at most {allowed:.0f})"
        assert fired == []
        # Let go: the target runs again and is not traced.
        status = Path(f"/proc/{target.pid}/status").read_text()
        assert "TracerPid:\t0" in status and "State:\tS" in status, status
    finally:
        target.kill()
        target.wait()
