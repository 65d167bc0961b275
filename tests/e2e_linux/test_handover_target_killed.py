"""A process handed over for a snapshot dump at a watched signal (`watch --signal ... --snapshot`) that is
SIGKILLed while its memory is copied from the clone: the clone holds the memory as it was at the signal,
so the dump is whole and kept, with the warning a plain snapshot dump gives (test_dies_mid_dump.py), and
nothing else is said about it: not an AccessDenied the kernel never meant ("the kernel refused ptrace":
it refuses to seize a zombie), not after a wait of AGAIN_PATIENCE for a second hold of a dead process.

The kill comes at one of the two points the hand-over meets a dead process, each made certain:
- before the watcher takes the process back: the test's kill runs inside the writer's word that the
  target runs (target_runs), and returns only once every thread has exited, so the take-back finds
  zombies;
- after the take-back, the signal delivered (its handler has run), and once the watcher has seen the
  death: the copy from the clone kills, waits for both, then copies; the second hold is then asked of a
  watcher that knows the process ended.
A third run kills as the copy begins and waits for nothing but the death: which of those the hand-over
meets (or a watcher yet to see the death, asked to hold a dead process) is the machine's choice, and the
outcome must be the same.
Nothing is mocked: the kill, the seizes and the reaping are the kernel's.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

import dumplib
from dumplib._linux import backend
from dumplib._linux.signalwatch import AGAIN_PATIENCE, SignalWatcher
from linuxrig import gdb
from test_dies_mid_dump import every_thread_exited
from test_handover_release import (HANDLER_PATIENCE, Handler, as_sent_by_us, hand_over_once, release_exe,  # noqa: F401
                                  release_target)

pytestmark = pytest.mark.linux


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    every_thread_exited(pid)


@pytest.mark.parametrize("when", ["before-the-take-back", "after-the-take-back", "as-the-copy-begins"])
def test_a_process_killed_while_its_snapshot_is_copied_in_a_hand_over_is_dumped_whole(
        release_exe: Path, tmp_path: Path, outdir: Path, monkeypatch, when: str) -> None:  # type: ignore[no-untyped-def]
    handler = Handler(tmp_path / "handler.txt")
    watchers: List[SignalWatcher] = []
    seen: Dict[str, Any] = {}
    with release_target(release_exe, handler.path, outdir, 16) as proc:
        if when == "before-the-take-back":
            runs = backend.target_runs

            def killed_then_runs(pid: int) -> None:
                if "killed" not in seen:  # the first call: the clone exists, the process waits in group-stop
                    kill(pid)
                    seen["killed"] = True
                runs(pid)

            monkeypatch.setattr(backend, "target_runs", killed_then_runs)
        copy_rest = backend._Snapshot.copy_rest

        def copy(self: Any, *args: Any) -> None:
            seen["clone"] = self.child
            if when == "after-the-take-back":
                seen["handler ran"] = handler.ran(within=HANDLER_PATIENCE)  # taken back, its signal delivered
                kill(proc.pid)
                seen["killed"] = True
                deadline = time.monotonic() + HANDLER_PATIENCE
                while not watchers[0].ended and time.monotonic() < deadline:
                    time.sleep(0.001)
                seen["watcher saw it"] = watchers[0].ended
            elif when == "as-the-copy-begins":
                kill(proc.pid)
                seen["killed"] = True
            copy_rest(self, *args)

        monkeypatch.setattr(backend._Snapshot, "copy_rest", copy)
        got = hand_over_once(proc.pid, lambda: dumplib.create_dump(proc.pid, outdir, "full", snapshot=True), watchers)
        assert seen.get("killed"), "the process was never killed"
        result = got.get("result")
        assert result is not None, f"the dump was kept, yet it failed: {got.get('error')!r}; {sorted(os.listdir(outdir))}"
        # Bounded by the hand-over's own patience: a writer left waiting for a hold of a dead process
        # waits all of it, so this cannot pass then; a 16 MiB dump takes far less, even at load 10.
        assert got["took"] < AGAIN_PATIENCE, f"the hand-over took {got['took']:.1f} s"
        assert result.snapshot is True
        assert [w for w in result.warnings if "exited while its memory was read from its snapshot" in w] == [
            f"process {proc.pid} exited while its memory was read from its snapshot: the dump shows it as it was"
            " when it was stopped"], result.warnings
        assert not [w for w in result.warnings if "taken back" in w], result.warnings
        final = os.path.basename(result.path)
        assert sorted(os.listdir(outdir)) == sorted([final, final + ".json"])
        # The process at its signal, as gdb reads the core: the handler's line buffer is still empty.
        out = gdb(str(release_exe), result.path, "p (char *)on_signal::line")
        assert '<line> ""' in out, out
        if when == "after-the-take-back":
            assert seen["handler ran"] and seen["watcher saw it"], seen
            assert [r["siginfo"] for r in handler.records()] == [as_sent_by_us()]
        elif when == "before-the-take-back":  # killed before its signal was given back: never delivered
            assert handler.records() == []
        else:  # delivered once if the take-back came first, else never
            assert [r["siginfo"] for r in handler.records()] in ([], [as_sent_by_us()]), handler.records()
        # The clone was killed and reaped (by the reaper the target's children went to), not left a zombie.
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{seen['clone']}") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not os.path.exists(f"/proc/{seen['clone']}"), f"the snapshot {seen['clone']} was left behind"
        # No tracer holds the zombie: its parent (this test) gets its death as it was.
        assert proc.wait(timeout=30) == -signal.SIGKILL
