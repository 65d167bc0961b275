"""A snapshot's stop reads /proc/PID/maps, not smaps (#16): VmFlags come from an smaps read made just
before the stop (dumplib/_linux/snapshot/guess.py), checked against the clone's smaps once the target
runs. These tests force the race the design must survive: the target changes a whole mapping's VmFlags
with madvise after that read and before the stop (the read's hook asks it to, and waits for its answer),
which leaves /proc/PID/maps as it was. The core must still be the stop's truth, read by gdb and readelf
(and the file's bytes): memory that became MADV_DONTDUMP is not in it at all, memory that became
MADV_DONTFORK or MADV_WIPEONFORK (absent or empty in the clone) holds what the stop held.

And where no such change happens, the core is byte for byte the one smaps read in the stop gives; a
userfaultfd in any of the target's descriptor tables (whose registrations a stopped thread could have
to answer for the clone() to return) sends the stop back to smaps.
"""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, ContextManager, List

import pytest

import dumplib
from helpers import require
from linuxrig import Target, build_source, gdb, have, run_target, sha256sum, thread_facts

pytestmark = pytest.mark.linux

HERE = Path(__file__).resolve().parent
FUTEX = 202  # x86-64: where a thread waiting on a lock sits


@pytest.fixture(scope="module")
def race_exe(tmp_path_factory) -> Path:
    return build_source(tmp_path_factory.mktemp("snapshot_race"), HERE / "snapshot_race_target.c")


def race_target(exe: Path) -> "ContextManager[Target]":
    # No rseq area: the kernel writes into it the CPU the thread last ran on, which two dumps may differ by.
    return run_target([str(exe)], env=dict(os.environ, GLIBC_TUNABLES="glibc.pthread.rseq=0"))


def reading(proc: Any) -> None:
    """Wait (bounded) until the target's main thread is in read() on its stdin (/proc/PID/syscall: 0):
    answered, it may still be inside stdio's locked flush, whose lock word two dumps would then differ by."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{proc.pid}/syscall") as f:
            if f.read().split()[:1] == ["0"]:
                return
        time.sleep(0.005)
    raise AssertionError(f"the target {proc.pid} never waited in read()")


def layouts(monkeypatch) -> List[bool]:
    """Whether each layout made in a stop used the guess (in call order). The stop's check for a
    userfaultfd may take as long as it needs here (guess.CHECK_FLOOR_SECONDS): given up on, it only
    means smaps in the stop, but these tests are about the stop that uses the guess, on a loaded host."""
    from dumplib._linux import backend
    from dumplib._linux.snapshot import guess

    monkeypatch.setattr(guess, "CHECK_FLOOR_SECONDS", 60.0)

    seen: List[bool] = []
    original = backend._stopped_layout

    def spied(*args: Any, **kwargs: Any) -> Any:
        layout = original(*args, **kwargs)
        seen.append(layout.guessed)
        return layout

    monkeypatch.setattr(backend, "_stopped_layout", spied)
    return seen


def advised_after_the_read(monkeypatch, target: Any, advice: str) -> List[str]:
    """The target madvises one region after the read before the stop, before the stop (the race)."""
    from dumplib._linux import backend

    answers: List[str] = []
    original = backend._guess_before_stop

    def then_advise(pid: int) -> Any:
        found = original(pid)
        if not answers:  # the first attempt only: a dump made again reads smaps in its stop
            answers.append(target.ask(advice))  # answered only by a running target
        return found

    monkeypatch.setattr(backend, "_guess_before_stop", then_advise)
    return answers


def gdb_strings(exe: Path, core: Path, info: dict, what: str) -> List[str]:
    commands = [f"x/s {info[what] + page * 4096}" for page in range(info["pages"])]
    out = gdb(str(exe), str(core), *commands)
    return [line.split(":", 1)[1].strip() if line.startswith("0x") else line.strip()
            for line in out.splitlines() if line.startswith("0x") or "Cannot access memory" in line]


def loads_over(core: Path, lo: int, hi: int) -> List[str]:
    """readelf's PT_LOADs that store bytes of [lo, hi)."""
    headers = subprocess.run(["readelf", "-lW", str(core)], capture_output=True, text=True, check=True).stdout
    out = []
    for line in headers.splitlines():
        f = line.split()
        if f[:1] == ["LOAD"] and int(f[4], 16) and int(f[2], 16) < hi and int(f[2], 16) + int(f[4], 16) > lo:
            out.append(line.strip())
    return out


def test_memory_first_written_after_the_read_is_in_the_core(race_exe, outdir, monkeypatch):
    """Page counts change without any change to VmFlags: the read before the stop says the two
    regions hold nothing (smaps), the stop finds them written. Private anonymous memory is laid out
    from the clone with the clone's counts; the MADV_WIPEONFORK region, read in the stop, from pagemap."""
    require(have("gdb"), "gdb is not installed")
    seen = layouts(monkeypatch)
    with race_target(race_exe) as target:
        answers = advised_after_the_read(monkeypatch, target, "touch")
        result = dumplib.create_dump(target.info["pid"], outdir / "late.core", "full", snapshot=True, sidecar=False)
        got = {what: gdb_strings(race_exe, result.path, target.info, what) for what in ("LATE", "LATEWIPE")}
    assert answers == ["touched"], f"the target did not write between the read and the stop: {answers}"
    assert seen == [True], f"the stop did not use the read made before it, or was made again: {seen}"
    assert result.snapshot and not result.warnings, result.warnings
    want = {what: [f'"{what}-{page}"' for page in range(target.info["pages"])] for what in ("LATE", "LATEWIPE")}
    assert got == want, f"gdb reads {got}, the stop held {want}"


@pytest.mark.parametrize("advice", ["DONTFORK", "WIPEONFORK"])
def test_memory_that_left_the_clone_after_the_read_is_the_stops(race_exe, outdir, monkeypatch, advice):
    require(have("gdb"), "gdb is not installed")
    from dumplib._linux.backend import LinuxSession
    from dumplib._linux.snapshot.guess import Stale

    seen = layouts(monkeypatch)
    stops: List[float] = []  # each attempt's own stop, as it ended
    once = LinuxSession._write_core_once

    def attempt(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            report = once(self, *args, **kwargs)
        except Stale as exc:
            stops.append(exc.stopped_seconds)
            raise
        stops.append(report.stopped_seconds)
        return report

    monkeypatch.setattr(LinuxSession, "_write_core_once", attempt)
    with race_target(race_exe) as target:
        answers = advised_after_the_read(monkeypatch, target, advice)
        result = dumplib.create_dump(target.info["pid"], outdir / f"{advice}.core", "full", snapshot=True,
                                     sidecar=False)
        got = gdb_strings(race_exe, result.path, target.info, advice)
    assert answers == ["advised"], f"the target did not madvise between the read and the stop: {answers}"
    assert seen[:1] == [True], f"the first stop did not use the read made before it: {seen}"
    assert result.snapshot, f"no snapshot was taken: {result.warnings}"
    want = [f'"{advice}-{page}"' for page in range(target.info["pages"])]
    assert got == want, f"gdb reads the {advice} region as {got}, the stop held {want} (warnings: {result.warnings})"
    # Found from the clone, which lacks the region or holds it empty: the dump was made again.
    assert any("changed as it was being stopped" in w for w in result.warnings), result.warnings
    # And the result's stop is both stops (docs/api.md).
    assert len(stops) == 2 and all(x > 0 for x in stops), stops
    assert abs(result.stopped_seconds - sum(stops)) < 1e-6, (result.stopped_seconds, stops)


def test_memory_that_became_dontdump_after_the_read_is_not_in_the_core(race_exe, outdir, monkeypatch):
    require(have("gdb") and have("readelf"), "gdb or readelf is not installed")
    seen = layouts(monkeypatch)
    with race_target(race_exe) as target:
        info = target.info
        answers = advised_after_the_read(monkeypatch, target, "DONTDUMP")
        result = dumplib.create_dump(info["pid"], outdir / "dontdump.core", "full", snapshot=True, sidecar=False)
        got = gdb_strings(race_exe, result.path, info, "DONTDUMP")
        fork = gdb_strings(race_exe, result.path, info, "DONTFORK")
    assert answers == ["advised"], f"the target did not madvise between the read and the stop: {answers}"
    assert seen[:1] == [True], f"the first stop did not use the read made before it: {seen}"
    stored = loads_over(result.path, info["DONTDUMP"], info["DONTDUMP"] + info["pages"] * 4096)
    assert not stored, f"PT_LOADs store the MADV_DONTDUMP region: {stored}"
    assert b"DONTDUMP-" not in Path(result.path).read_bytes(), "the MADV_DONTDUMP region's bytes are in the core"
    assert all("Cannot access memory" in line for line in got), f"gdb reads the MADV_DONTDUMP region: {got}"
    # The rest of the core is there: the region beside it reads as it was.
    assert fork == [f'"DONTFORK-{page}"' for page in range(info["pages"])], fork
    assert any("changed as it was being stopped" in w for w in result.warnings), result.warnings


def test_without_a_change_the_core_is_the_one_smaps_in_the_stop_gives(race_exe, outdir, monkeypatch):
    """Byte for byte (the target sleeps on its stdin between the dumps), mini and full."""
    from dumplib._linux import backend

    seen = layouts(monkeypatch)
    with race_target(race_exe) as target:
        assert target.ask("WIPEONFORK") == "advised"  # (a MADV_DONTFORK mapping takes the guess away)
        reading(target)
        pid = target.info["pid"]
        for kind in ("full", "mini"):
            guessed = dumplib.create_dump(pid, outdir / f"guessed-{kind}.core", kind, snapshot=True, sidecar=False)
            with monkeypatch.context() as m:
                m.setattr(backend, "_guess_before_stop", lambda pid: None)
                read = dumplib.create_dump(pid, outdir / f"read-{kind}.core", kind, snapshot=True, sidecar=False)
            assert guessed.snapshot and read.snapshot, (guessed.warnings, read.warnings)
            assert not guessed.warnings, guessed.warnings
            same = subprocess.run(["cmp", str(guessed.path), str(read.path)], capture_output=True, text=True)
            assert same.returncode == 0, f"{kind}: the guessed stop's core differs: {same.stdout}{same.stderr}"
    assert seen == [True, False, True, False], seen


@pytest.mark.parametrize("where", ["uffd", "uffd-thread"])
def test_a_userfaultfd_in_the_targets_tables_sends_the_stop_back_to_smaps(race_exe, outdir, monkeypatch, where):
    """A thread holding a userfaultfd could have registered a mapping after the read (no change to
    maps), and a context that forks with its mappings makes the clone() wait for that thread: stopped.
    Held in the shared table, or in a thread's own (unshare(CLONE_FILES)): smaps is read in the stop."""
    seen = layouts(monkeypatch)
    with race_target(race_exe) as target:
        pid = target.info["pid"]
        dumplib.create_dump(pid, outdir / "before.core", "mini", snapshot=True, sidecar=False)
        assert target.ask(where).startswith(where)
        result = dumplib.create_dump(pid, outdir / "after.core", "mini", snapshot=True, sidecar=False)
    assert result.snapshot, result.warnings
    assert seen == [True, False], f"layouts that used the guess, before and after the userfaultfd: {seen}"


def test_without_a_snapshot_the_stop_reads_smaps_after_all(race_exe, outdir, monkeypatch):
    """snapshot="auto" that takes none (here an obstacle the test makes) dumps the stopped target in
    place: no clone then to check the guess against, so smaps is read in that stop. Memory that became
    MADV_DONTDUMP after the read before the stop is left out."""
    require(have("readelf"), "readelf is not installed")
    from dumplib._linux.snapshot import policy

    seen = layouts(monkeypatch)
    monkeypatch.setattr(policy, "obstacle", lambda *args, **kwargs: "the test allows none")
    with race_target(race_exe) as target:
        info = target.info
        answers = advised_after_the_read(monkeypatch, target, "DONTDUMP")
        result = dumplib.create_dump(info["pid"], outdir / "auto.core", "full", snapshot="auto", sidecar=False)
    assert answers == ["advised"], f"the target did not madvise between the read and the stop: {answers}"
    assert not result.snapshot and any("the test allows none" in w for w in result.warnings), result.warnings
    stored = loads_over(Path(result.path), info["DONTDUMP"], info["DONTDUMP"] + info["pages"] * 4096)
    assert not stored, f"PT_LOADs store the MADV_DONTDUMP region: {stored}"
    assert b"DONTDUMP-" not in Path(result.path).read_bytes(), "the MADV_DONTDUMP region's bytes are in the core"
    assert seen == [True, False], f"layouts that used the guess: {seen}"


def test_the_check_for_a_userfaultfd_gives_up_past_its_time(race_exe):
    """No longer than the smaps walk it replaces (or its floor): given no time, it does not tell, so
    the stop reads smaps; given time, the same target passes."""
    from dumplib._linux.snapshot import guess

    with race_target(race_exe) as target:
        pid = target.info["pid"]
        assert guess.no_userfaultfd(pid, [pid], 60.0), "a target without a userfaultfd failed the check"
        assert not guess.no_userfaultfd(pid, [pid], -1.0), "the check went on past its time"


def test_memory_of_a_dontfork_mapping_made_dontdump_after_the_read_is_not_in_the_core(race_exe, outdir, monkeypatch):
    """A MADV_DONTFORK mapping is read while stopped and is absent from the clone, which therefore cannot
    tell that it became MADV_DONTDUMP after the read (or that another mapping with other flags took its
    place, with the same maps line): a process with such a mapping gets smaps read in the stop, and
    the memory it asked not to be dumped is not in the core."""
    require(have("readelf"), "readelf is not installed")
    seen = layouts(monkeypatch)
    with race_target(race_exe) as target:
        info = target.info
        assert target.ask("DONTFORK") == "advised"
        answers = advised_after_the_read(monkeypatch, target, "DONTFORK-DONTDUMP")
        result = dumplib.create_dump(info["pid"], outdir / "dc-dd.core", "full", snapshot=True, sidecar=False)
    assert answers == ["advised"], f"the target did not madvise between the read and the stop: {answers}"
    assert result.snapshot, result.warnings
    assert seen == [False], f"layouts that used the guess: {seen}"
    stored = loads_over(Path(result.path), info["DONTFORK"], info["DONTFORK"] + info["pages"] * 4096)
    assert not stored, f"PT_LOADs store the region made MADV_DONTDUMP: {stored}"
    import re  # the region's pages hold "DONTFORK-<page>"; the command it obeyed, "DONTFORK-DONTDUMP", is elsewhere

    assert not re.search(rb"DONTFORK-\d", Path(result.path).read_bytes()), "the region made MADV_DONTDUMP is in the core"


HOLDER = r"""
import ctypes, sys
fd = ctypes.CDLL(None, use_errno=True).syscall(323, 0o2000000)  # SYS_userfaultfd (x86-64), O_CLOEXEC
print(fd, flush=True)
sys.stdin.read()
"""


def test_a_userfaultfd_held_by_any_other_process_sends_the_stop_back_to_smaps(race_exe, outdir, monkeypatch):
    """Its holder could register the target's mappings between the read before the stop and the stop
    (a context the target created, handed on and closed: in no table of the target's), and a context
    that forks with them makes the clone() wait for that holder. Any userfaultfd open in another
    process: smaps is read in the stop. Without one, the guess serves."""
    import sys

    seen = layouts(monkeypatch)
    with race_target(race_exe) as target:
        pid = target.info["pid"]
        dumplib.create_dump(pid, outdir / "before.core", "mini", snapshot=True, sidecar=False)
        holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True)
        try:
            assert int(holder.stdout.readline()) >= 0, "no userfaultfd could be opened"  # type: ignore[union-attr]
            result = dumplib.create_dump(pid, outdir / "held.core", "mini", snapshot=True, sidecar=False)
        finally:
            holder.kill()
            holder.wait()
    assert result.snapshot, result.warnings
    assert seen == [True, False], f"layouts that used the guess, before and with the userfaultfd: {seen}"


def test_the_sidecars_hasher_runs_nothing_in_a_stop_made_again(race_exe, outdir, monkeypatch):
    """The hasher is told the target runs only once the clone's layout holds (backend.py): a stop made
    again must find it still waiting in the kernel. Inside that second stop (its layout, the target's
    threads all in tracing stop), the test holds the stop 0.1 s and reads the hashing thread from the
    kernel before and after: the same voluntary context switches, still in futex (a hasher let go
    polls its file every 10 ms). The sidecar's sha256 is sha256sum's."""
    from dumplib._linux import backend

    seen = layouts(monkeypatch)
    second: List[Any] = []
    spied = backend._stopped_layout

    def held(pid: int, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("guess") is None and seen:  # a stop after the first: the one made again
            hashers = [t.native_id for t in threading.enumerate() if t.name == "dumplib-sha256"]
            states = {(task / "stat").read_text().rsplit(")", 1)[1].split()[0]
                      for task in Path(f"/proc/{pid}/task").iterdir()}
            before = [thread_facts(t) for t in hashers if t]
            time.sleep(0.1)
            second.append((states, before, [thread_facts(t) for t in hashers if t]))
        return spied(pid, *args, **kwargs)

    monkeypatch.setattr(backend, "_stopped_layout", held)
    with race_target(race_exe) as target:
        answers = advised_after_the_read(monkeypatch, target, "DONTFORK")
        result = dumplib.create_dump(target.info["pid"], outdir / "again.core", "full", snapshot=True)
        target.assert_running_untraced()
    assert answers == ["advised"], f"the target did not madvise between the read and the stop: {answers}"
    assert any("changed as it was being stopped" in w for w in result.warnings), result.warnings
    assert len(second) == 1, second
    states, before, after = second[0]
    assert states == {"t"}, f"the target was not stopped in the second stop's layout: {states}"
    assert len(before) == 1, f"no one hashing thread in the second stop: {before}"
    assert before == after and before[0][1] == FUTEX, f"the hasher ran in the second stop: {before} -> {after}"
    sidecar = json.loads(Path(str(result.path) + ".json").read_text())
    assert sidecar["sha256"] == sha256sum(result.path) == result.sha256
