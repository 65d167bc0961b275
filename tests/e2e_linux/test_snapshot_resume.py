"""A snapshot lets the target go as soon as its clone is made, in the same order to the helper, where
nothing is left to read from the stopped target: on a loaded host each round trip between dumplib and
its helper is a wait for a CPU added to the stop. Where something is (MAP_SHARED memory, read at the
snapshot's instant from the target itself), the target stays stopped until it is read. Read from the
kernel: the target's state the moment dumplib has the clone."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List

import pytest

import dumplib
from dumplib._linux.snapshot import remote
from linuxrig import run_target
from test_snapshot import snap_exe, snapshot_target  # noqa: F401 (snap_exe: a fixture, used by name)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a snapshot's helper traces the target: root here")


def _states_when_cloned(monkeypatch: pytest.MonkeyPatch, pid: int, path: Path) -> List[str]:
    """Dump *pid* with a snapshot; the state letters of its main thread each time dumplib got a clone."""
    states: List[str] = []
    taken = remote.RemoteStoppedProcess.take_snapshot

    def observed(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        child = taken(self, *args, **kwargs)
        states.append(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0])
        return child

    monkeypatch.setattr(remote.RemoteStoppedProcess, "take_snapshot", observed)
    result = dumplib.create_dump(pid, str(path), "full", snapshot=True, sidecar=False)
    assert result.snapshot, result.warnings
    return states


def test_with_nothing_to_read_from_the_stopped_target_it_runs_once_the_clone_is_made(target_exe, tmp_path, monkeypatch):
    with run_target([str(target_exe), "--heap", "16"]) as t:
        states = _states_when_cloned(monkeypatch, t.pid, tmp_path / "t.core")
    assert len(states) == 1 and states[0] != "t", f"the target was still stopped when dumplib had the clone: {states}"


def test_with_shared_memory_to_read_first_it_stays_stopped_until_then(snap_exe, tmp_path, monkeypatch):  # noqa: F811
    with snapshot_target(snap_exe) as snap:  # its small MAP_SHARED memory is read from the stopped target
        states = _states_when_cloned(monkeypatch, snap.pid, tmp_path / "t.core")
    assert states == ["t"], f"the target ran before its shared memory was read: {states}"
