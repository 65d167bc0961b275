"""A snapshot dump whose max_pause runs out is refused as a max-pause, whatever stage it was at.

The tracer lets the target go at the deadline and ends; a request the caller made meanwhile (the
snapshot's clone, or letting the target go) then found no tracer and raised DumpFailed "the tracer
ended unexpectedly" with no reason, so a caller sorting failures by reason (docs/api.md's example
retries on "max-pause") took it for a bug. The deadlines tried straddle the stage where that happens
(a race: with the fix taken out it failed 5 runs of 5 here)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import dumplib
from dumplib.errors import DumpFailed
from linuxrig import assert_running_untraced
from snapattack import build, children, started


def test_every_failure_of_a_snapshot_cut_short_by_max_pause_says_max_pause(tmp_path: Path) -> None:
    exe = build(tmp_path, "attack_exec_target.c")  # 16 MiB of heap: a pause of some milliseconds
    with started(exe) as proc:
        pid = int(proc.stdout.readline())
        seen = []
        # About one deadline in 60 lands in that window here: 150 of them around the pause's length.
        for max_pause in [n / 10000 for n in range(20, 120, 2)] * 3:
            try:
                res = dumplib.create_dump(pid, str(tmp_path / "m.core"), "full", snapshot=True, max_pause=max_pause,
                                          sidecar=False)
                os.remove(res.path)
                seen.append("ok")
            except DumpFailed as exc:
                seen.append(exc.details().get("reason"))
                assert exc.details().get("reason") == "max-pause", f"max_pause {max_pause}: {exc}"
            time.sleep(0.02)
            assert_running_untraced(pid)
            assert children(pid) == [], f"a child is left after a dump cut short at {max_pause} s"
