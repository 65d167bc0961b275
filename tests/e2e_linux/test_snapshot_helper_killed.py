"""The snapshot's tracer process (snapshot/remote.py's helper) SIGKILLed while the memory is read from the
clone: the kernel kills the clone with its tracer (PTRACE_O_EXITKILL) and leaves it a zombie child of the
target. It was left there for good (only the target's waitpid(__WALL) or its exit would take it), and the
error blamed "the OOM killer?". Now dumplib has the target reap it through a new helper and the error
names the killed tracer; and a clone that cannot be reaped (another tracer holds the target: strace -p)
is named by its pid, in the error and in the warning of a dump that succeeds.

The checks are the target's children and state in /proc, and the error dumplib raises.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

import pytest

import dumplib
from helpers import require

if not sys.platform.startswith("linux"):
    pytest.skip("Linux only", allow_module_level=True)

from test_snapshot_clone_killed import children, heap  # noqa: E402

pytestmark = pytest.mark.linux

__all__ = ["heap"]  # a fixture (test_snapshot_clone_killed's 256 MiB target), used by name


def helper_of(pid: int) -> Optional[int]:
    """The snapshot helper (our child, running snapshot/remote.py's serve) holding process *pid*."""
    for entry in Path(f"/proc/{os.getpid()}/task").iterdir():
        for child in (entry / "children").read_text().split():
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            serves = any(a.endswith(b"from dumplib._linux.snapshot.remote import serve; serve()") for a in argv)
            if serves and str(pid).encode() in argv:
                return int(child)
    return None


def running(pid: int) -> bool:
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state not in ("t", "T")


def kill_helper_once_the_target_runs(pid: int, killed: List[int], before=lambda: None):  # type: ignore[no-untyped-def]
    """A progress callback: at the first chunk copied with the target running (the copy is the clone's),
    *before*() and then SIGKILL the helper."""
    def progress(written: int, _elapsed: float) -> None:
        if written and not killed and running(pid) and children(pid):
            helper = helper_of(pid)
            if helper is not None:
                before()
                os.kill(helper, signal.SIGKILL)
                killed.append(helper)
    return progress


def test_a_killed_snapshot_helper_leaves_no_zombie_and_says_what_happened(heap, outdir: Path) -> None:
    killed: List[int] = []
    clones = children(heap.pid)
    with pytest.raises(dumplib.DumpFailed) as caught:
        dumplib.create_dump(heap.pid, outdir / "k.core", "full", snapshot=True, sidecar=False,
                            progress=kill_helper_once_the_target_runs(heap.pid, killed))
    assert killed, "the helper was never found to kill: nothing tested"
    message = str(caught.value)
    assert caught.value.reason == "snapshot-lost", message
    assert f"tracer process (process {killed[0]}) was killed (SIGKILL)" in message, message
    assert "OOM" not in message and "was made to reap the snapshot" in message, message
    # At once, not in a while: the call returned only once the target had reaped it.
    assert children(heap.pid) == clones == [], children(heap.pid)
    status = Path(f"/proc/{heap.pid}/status").read_text()
    assert "TracerPid:\t0" in status and ("State:\tS" in status or "State:\tR" in status), status  # let go
    assert list(outdir.iterdir()) == []


def strace(pid: int, tracers: List["subprocess.Popen[bytes]"]) -> None:
    """strace -p *pid*, waited for until the kernel shows it as the tracer."""
    require(bool(subprocess.run(["which", "strace"], capture_output=True).stdout), "strace is not installed")
    tracers.append(subprocess.Popen(["strace", "-qq", "-o", "/dev/null", "-p", str(pid)], stderr=subprocess.DEVNULL))
    deadline = time.monotonic() + 30
    while "TracerPid:\t0" in Path(f"/proc/{pid}/status").read_text():
        assert time.monotonic() < deadline, "strace never attached"
        time.sleep(0.01)


def test_a_clone_that_cannot_be_reaped_is_named(heap, outdir: Path) -> None:
    """strace attached to the target while its clone is read: the new helper cannot stop it to reap the
    clone the killed one left, and the error names the zombie's pid, as README says."""
    killed: List[int] = []
    tracers: List["subprocess.Popen[bytes]"] = []

    def attach() -> None:
        strace(heap.pid, tracers)

    try:
        with pytest.raises(dumplib.DumpFailed) as caught:
            dumplib.create_dump(heap.pid, outdir / "k.core", "full", snapshot=True, sidecar=False,
                                progress=kill_helper_once_the_target_runs(heap.pid, killed, attach))
        assert killed and tracers, "nothing tested"
        left = children(heap.pid)
        message = str(caught.value)
        assert len(left) == 1 and f"snapshot (process {left[0]}) is left as a zombie child of process" \
                                  f" {heap.pid}" in message, (left, message)
        assert "could not be stopped" in message and "__WALL" in message, message
    finally:
        for tracer in tracers:
            tracer.terminate()
            tracer.wait()
    assert list(outdir.iterdir()) == []


def test_strace_attached_during_the_copy_leaves_a_named_zombie(heap, outdir: Path) -> None:
    """The helper alive, strace attached while the clone is read: the dump is written, the target cannot
    be stopped again to reap its clone, and the warning names the clone's pid (README, docs/api.md)."""
    tracers: List["subprocess.Popen[bytes]"] = []

    def progress(written: int, _elapsed: float) -> None:
        if written and not tracers and running(heap.pid) and children(heap.pid):
            strace(heap.pid, tracers)

    try:
        result = dumplib.create_dump(heap.pid, outdir / "k.core", "full", snapshot=True, sidecar=False,
                                     progress=progress)
        assert tracers, "nothing tested"
        left = children(heap.pid)
        assert len(left) == 1, left
        said = [w for w in result.warnings if f"the snapshot (process {left[0]}) is left as a zombie child of"
                f" process {heap.pid}: the process could not be stopped again to reap it" in w]
        assert said and "__WALL" in said[0], result.warnings
    finally:
        for tracer in tracers:
            tracer.terminate()
            tracer.wait()


ZOMBIE_PARENT = r"""
import os, sys
child = os.fork()
if child == 0:
    os._exit(7)
print(child, flush=True)
sys.stdin.read()
"""


def test_the_orphan_reap_takes_only_the_clone_it_was_given() -> None:
    """clone.reap_orphan, run straight on a process with a zombie child of its own: a start time that is
    not the zombie's (the pid taken again by another child of the target since) leaves it alone; its
    own start has the process reap it, through the same injected wait4 the helper makes."""
    from dumplib._linux.proc.pidfiles import start_ticks
    from dumplib._linux.snapshot.clone import reap_orphan

    proc = subprocess.Popen([sys.executable, "-c", ZOMBIE_PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        zombie = int(proc.stdout.readline())
        deadline = time.monotonic() + 10
        while Path(f"/proc/{zombie}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        start = start_ticks(zombie)
        assert start is not None
        assert reap_orphan(proc.pid, zombie, start + 1) is None
        assert children(proc.pid) == [zombie]  # not ours: left alone
        assert reap_orphan(proc.pid, zombie, start) is None
        assert children(proc.pid) == [] and not Path(f"/proc/{zombie}").exists()
        status = Path(f"/proc/{proc.pid}/status").read_text()
        # Running or asleep, untraced: just let go, it may not be back in its read yet (R seen in CI).
        assert "TracerPid:\t0" in status and ("State:\tS" in status or "State:\tR" in status), status
    finally:
        proc.kill()
        proc.wait()
