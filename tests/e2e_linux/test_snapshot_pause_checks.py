"""A snapshot's helper process is asked over a pipe whether max_pause ran out: between the chunks of a
copy made with the target stopped (a snapshot not taken) only now and then, but the check after the
copy always asks, so a target let go a moment after the last ask is never taken for still stopped.

Real helper and target; that the target was let go is read from the kernel (its threads' states).
"""
from __future__ import annotations

import time

import pytest

from dumplib.errors import DumpFailed
from linuxrig import run_target


def _stopped(pid: int) -> bool:
    from pathlib import Path

    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        if stat[stat.rindex(")") + 2] != "t":
            return False
    return True


def test_the_exact_check_asks_even_right_after_an_ask_between_chunks(target_exe):
    from dumplib._linux.snapshot.remote import RemoteStoppedProcess

    with run_target([str(target_exe)]) as t:
        with RemoteStoppedProcess(t.pid, max_pause=1.0) as stopped:
            assert _stopped(t.pid)
            deadline = time.monotonic() + 60
            # As a copy's ticks do: asked between chunks, until the helper lets the target go at max_pause.
            seen_between = None
            while _stopped(t.pid):
                try:
                    stopped.check_pause_soon()
                except DumpFailed as exc:  # asked in the instant between the helper's expiry and its detach
                    seen_between = exc
                    break
                assert time.monotonic() < deadline, "max_pause never let the target go"
                time.sleep(0.001)
            if seen_between is None:
                # Let go within a few ms of the last ask between chunks: the final check must still see it.
                with pytest.raises(DumpFailed) as info:
                    stopped.check_pause()
                seen_between = info.value
            assert seen_between.details().get("reason") == "max-pause", seen_between.details()
            with pytest.raises(DumpFailed):
                stopped.check_pause_soon()  # and every check after it
        t.assert_running_untraced()
