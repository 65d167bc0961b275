"""A snapshot's clone killed once the target runs again (the OOM killer picks it: it holds a copy of
the target's memory; or an operator) ends the dump with DumpFailed reason "snapshot-lost", naming the
target, with nothing kept, the target running untraced and childless. It was reported as the clone's
own "exit" under the clone's pid, a process the user never named: a killed process is no zombie yet
while it exits, its memory already gone, and the check took its state for a live one."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List

import pytest

import dumplib
from dumplib._linux import backend

if not sys.platform.startswith("linux"):
    pytest.skip("Linux only", allow_module_level=True)

HEAP = r"""
import mmap, sys
n = int(sys.argv[1]) << 20
m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for at in range(0, n, 4096):
    m[at : at + 8] = b"HEAPPAGE"
print("ready", flush=True)
sys.stdin.read()
"""


def children(pid: int) -> List[int]:
    """The children of every thread of *pid* (the snapshot's clone is the child of the thread that made it)."""
    out: List[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            pass
    return out


@pytest.fixture()
def heap() -> Iterator["subprocess.Popen[str]"]:
    proc = subprocess.Popen([sys.executable, "-c", HEAP, "256"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def check_lost(caught: "pytest.ExceptionInfo[dumplib.DumpFailed]", pid: int, outdir: Path, killed: List[int]) -> None:
    assert killed, "the clone was never found to kill: nothing tested"
    assert caught.value.reason == "snapshot-lost", caught.value
    assert f"process {pid}" in str(caught.value) and str(killed[0]) not in str(caught.value), caught.value
    assert list(outdir.iterdir()) == []
    status = Path(f"/proc/{pid}/status").read_text()
    assert "TracerPid:\t0" in status and ("State:\tS" in status or "State:\tR" in status), status  # let go
    deadline = time.monotonic() + 10
    while children(pid) and time.monotonic() < deadline:  # the clone's zombie is reaped by its holder
        time.sleep(0.05)
    assert children(pid) == [], children(pid)


def test_a_clone_killed_while_its_memory_is_copied_is_snapshot_lost(heap, outdir):
    killed: List[int] = []

    def progress(written: int, _elapsed: float) -> None:
        state = Path(f"/proc/{heap.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if written and not killed and state not in ("t", "T"):  # the target runs: the copy is the clone's
            for child in children(heap.pid):
                os.kill(child, signal.SIGKILL)
                killed.append(child)

    with pytest.raises(dumplib.DumpFailed) as caught:
        dumplib.create_dump(heap.pid, outdir / "k.core", "full", snapshot=True, sidecar=False, progress=progress)
    check_lost(caught, heap.pid, outdir, killed)


def test_a_clone_killed_before_its_page_map_is_read_is_snapshot_lost(heap, outdir, monkeypatch):
    killed: List[int] = []
    real = backend._lay_out_from_clone

    def kill_first(pid, snap, layout):  # type: ignore[no-untyped-def]
        os.kill(snap.child, signal.SIGKILL)  # the moment the target runs and the layout is finished from the clone
        killed.append(snap.child)
        return real(pid, snap, layout)

    monkeypatch.setattr(backend, "_lay_out_from_clone", kill_first)
    with pytest.raises(dumplib.DumpFailed) as caught:
        dumplib.create_dump(heap.pid, outdir / "k.core", "full", snapshot=True, sidecar=False)
    check_lost(caught, heap.pid, outdir, killed)
