"""A target that dies in the middle of its dump, at a point the test chooses, every run.

The dump's own progress callback is the trigger: the first time create_dump calls it, the write has
begun (the target is stopped and its memory is being read; with a snapshot, the clone is being read
and the target runs), and the callback SIGKILLs the target, then waits until every thread of it has
exited before it returns, so the next read meets a process with no address space, whatever the
machine's load. Nothing is mocked: the kill, the reads and the cleanup are the kernel's.

Without a snapshot the dump is `DumpFailed` reason ``exited`` (errors.py: the target died while it was
being dumped), through a file or a stream, and leaves nothing: no temporary, no sidecar, a redirected
stdout cut back to what it held, no thread of dumplib's and no process of the target's, and the
target's parent gets its death as it was (-SIGKILL). With a snapshot the clone holds the memory as it
was when the target was stopped, so the dump is whole and kept, with a warning (docs/api.md,
"snapshot").
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import pytest

import dumplib
from dumplib.formats import elfcore
from helpers import leftovers
from linuxrig import Target, run_target

pytestmark = pytest.mark.linux
HEAP_MIB = 256


@pytest.fixture()
def doomed(target_exe: Path) -> Iterator[Target]:
    with run_target([str(target_exe), "--heap", str(HEAP_MIB)]) as t:
        yield t


#: A heap whose core is under MAP_AT_LEAST (64 MiB): streamed during the stop, not staged in memory.
STREAMED_MIB = 40


@pytest.fixture(params=[STREAMED_MIB, HEAP_MIB], ids=["streamed", "staged"])
def doomed_stream(request, target_exe: Path) -> Iterator[Target]:  # type: ignore[no-untyped-def]
    """A target whose core goes down a stream during the stop (under 64 MiB), or is staged in memory and
    sent once the target runs (core/staged.py): killed mid-copy, nothing of the latter has been sent."""
    with run_target([str(target_exe), "--heap", str(request.param)]) as t:
        t.heap_mib = request.param  # type: ignore[attr-defined]
        yield t


def every_thread_exited(pid: int, patience: float = 30.0) -> List[str]:
    """Wait until no thread of *pid* runs (each a zombie, or gone); their last states."""
    deadline = time.monotonic() + patience
    while True:
        states = []
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            tids = []
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except OSError:
                continue
        if all(s in "ZX" for s in states):
            return states
        assert time.monotonic() < deadline, f"process {pid} still has running threads after SIGKILL: {states}"
        time.sleep(0.001)


def kill_at_first_progress(pid: int, then: Callable[[], None] = lambda: None) -> "tuple[Callable[[int, float], None], Dict[str, object]]":
    """create_dump's progress callback: the first call SIGKILLs *pid* and returns once it is dead."""
    seen: Dict[str, object] = {"calls": 0}

    def progress(written: int, elapsed: float) -> None:
        seen["calls"] = int(seen["calls"]) + 1  # type: ignore[call-overload]
        if "killed" in seen:
            return
        os.kill(pid, signal.SIGKILL)
        seen["killed"] = every_thread_exited(pid)
        then()

    return progress, seen


def nothing_of_it_left(t: Target) -> None:
    """The target's parent (this test) reaps it and sees the SIGKILL: no tracer holds its zombie; no
    process runs its executable (a snapshot's clone); no thread of dumplib's lives on."""
    assert t.proc.wait(timeout=30) == -signal.SIGKILL
    exe = os.path.realpath(t.proc.args[0])  # type: ignore[index]
    running = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/exe") == exe:
                    running.append(int(entry))
            except OSError:
                continue
    assert running == []
    assert not [th.name for th in threading.enumerate() if th.name.startswith("dumplib-")]


def test_a_target_killed_while_its_memory_is_read_to_a_file_is_exited_and_leaves_nothing(
        doomed: Target, outdir: Path) -> None:
    progress, seen = kill_at_first_progress(doomed.pid)
    with pytest.raises(dumplib.DumpFailed) as raised:
        dumplib.create_dump(doomed.pid, outdir, "full", progress=progress)
    assert "killed" in seen, "the dump never called its progress callback"
    assert raised.value.reason == "exited", raised.value.details()
    assert raised.value.pid == doomed.pid
    assert "nothing was kept" in str(raised.value)
    assert list(outdir.iterdir()) == [] and leftovers(outdir) == []  # no temporary, no dump, no sidecar
    nothing_of_it_left(doomed)


@pytest.mark.parametrize("codec", ["zstd", None])
def test_a_target_killed_while_its_memory_streams_to_stdout_is_exited_and_cut_back(
        doomed_stream: Target, outdir: Path, monkeypatch, codec) -> None:  # type: ignore[no-untyped-def]
    """`dumplib dump PID - -z zstd >> FILE`: stdout is a file the dump is appended to; the failed dump
    is cut from it, which holds what it held before again. zstd's workers may not have sent out
    anything yet when the target dies; uncompressed and streamed during the stop, the core's head is in
    the file by then; staged, nothing is."""
    doomed = doomed_stream
    redirected = outdir / "dumps.log"
    before = b"an earlier line\n"
    redirected.write_bytes(before)
    progress, seen = kill_at_first_progress(doomed.pid, then=lambda: seen.update(size=redirected.stat().st_size))
    with open(redirected, "a") as stdout:
        monkeypatch.setattr(sys, "stdout", stdout)
        with pytest.raises(dumplib.DumpFailed) as raised:
            dumplib.create_dump(doomed.pid, "-", "full", compress=codec, progress=progress)
    assert "killed" in seen, "the dump never called its progress callback"
    assert raised.value.reason == "exited", raised.value.details()
    if doomed.heap_mib == HEAP_MIB:  # type: ignore[attr-defined]
        assert seen["size"] == len(before), "a staged dump reached the file while the target was stopped"
    elif codec is None:
        assert seen["size"] > len(before), "nothing of the dump had reached the file when the target died"
    assert redirected.read_bytes() == before
    assert sorted(p.name for p in outdir.iterdir()) == ["dumps.log"]
    nothing_of_it_left(doomed)


@pytest.mark.parametrize("codec", [None, "zstd"])
def test_a_target_killed_while_its_memory_streams_down_a_pipe_says_what_the_reader_received(
        doomed_stream: Target, monkeypatch, codec) -> None:  # type: ignore[no-untyped-def]
    """`dumplib dump PID - | reader`: a pipe cannot be cut back, so once bytes went down it the error says
    how many the reader received (counted here by the reader itself), not "nothing was kept". Staged,
    nothing went down it, and the error says nothing was kept."""
    doomed = doomed_stream
    r, w = os.pipe()
    received: List[int] = [0]

    def drain() -> None:
        while True:
            chunk = os.read(r, 1 << 20)
            if not chunk:
                return
            received[0] += len(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    progress, seen = kill_at_first_progress(doomed.pid)
    stdout = os.fdopen(w, "wb")
    try:
        monkeypatch.setattr(sys, "stdout", stdout)
        with pytest.raises(dumplib.DumpFailed) as raised:
            dumplib.create_dump(doomed.pid, "-", "full", compress=codec, progress=progress)
    finally:
        stdout.close()
        reader.join(30)
        os.close(r)
    assert "killed" in seen, "the dump never called its progress callback"
    assert raised.value.reason == "exited", raised.value.details()
    message = str(raised.value)
    if doomed.heap_mib == HEAP_MIB:  # type: ignore[attr-defined]
        assert received[0] == 0, "a staged dump went down the pipe while the target was stopped"
    elif codec is None:
        assert received[0] > 0, "nothing of the dump had gone down the pipe when the target died"
    if received[0]:
        assert f"the reader of stdout already received the first {received[0]} bytes of the dump" in message, (
            received[0], message)
        assert "nothing was kept" not in message, message
    else:  # zstd's workers had sent nothing yet: then nothing is what the reader has
        assert "nothing was kept" in message, message
    nothing_of_it_left(doomed)


def test_a_dead_target_is_exited_even_when_the_rest_of_its_read_would_outlast_max_pause(
        doomed: Target, outdir: Path) -> None:
    """Once the address space is gone every read is empty: the dump ends at the first one, as exited,
    rather than read the rest as zeros page by page until max_pause takes it for a slow output. The
    callback returns only after max_pause has run out, so any look at the clock after it says max-pause."""
    max_pause = 2.0
    progress, seen = kill_at_first_progress(doomed.pid, then=lambda: time.sleep(max_pause + 0.5))
    with pytest.raises(dumplib.DumpFailed) as raised:
        dumplib.create_dump(doomed.pid, outdir, "full", progress=progress, max_pause=max_pause)
    assert "killed" in seen, "the dump never called its progress callback"
    assert raised.value.reason == "exited", raised.value.details()
    assert seen["calls"] == 1, "the dump went on after the process was gone"
    assert list(outdir.iterdir()) == []
    nothing_of_it_left(doomed)


def test_a_target_killed_after_its_snapshot_was_taken_is_dumped_whole_from_the_clone(
        doomed: Target, outdir: Path) -> None:
    """The clone holds the memory as it was when the target was stopped, and the target's death does
    not change a byte of it: the dump is kept, saying the process has exited since."""
    progress, seen = kill_at_first_progress(doomed.pid)
    result = dumplib.create_dump(doomed.pid, outdir, "full", snapshot=True, progress=progress)
    assert "killed" in seen, "the dump never called its progress callback"
    assert result.snapshot is True
    assert any(f"process {doomed.pid} exited while its memory was read from its snapshot" in w
               for w in result.warnings), result.warnings
    # Read from the clone, not as zeros from a dead process: the heap's pages are in the file, not holes.
    assert result.disk_bytes is not None and result.disk_bytes > HEAP_MIB << 20
    core = elfcore.read_elfcore(result.path)
    assert not core.problems and len(core.threads) == doomed.threads
    assert sorted(p.name for p in outdir.iterdir()) == sorted([os.path.basename(result.path),
                                                               os.path.basename(result.path) + ".json"])
    nothing_of_it_left(doomed)
