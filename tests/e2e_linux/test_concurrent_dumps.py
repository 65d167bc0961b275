"""Two dumps of one process at once, from two threads of one program (a library caller, a watcher's
sampled dump beside an explicit one): each holds its own session on the target, neither releases the
other's pidfd, the second stop waits for the first to let the target go, and both cores are whole."""
import os
import re
import subprocess
import threading
import time
from typing import Dict, List

import pytest

import dumplib
from linuxrig import gdb, run_target

pytestmark = pytest.mark.linux


def _threads_in(out: str) -> int:
    return len(re.findall(r"^\*?\s+\d+\s+(?:Thread|LWP|process)", out, re.M))


@pytest.mark.parametrize("same_directory", [False, True], ids=["two-directories", "one-directory"])
def test_two_dumps_of_one_process_from_two_threads_both_succeed(target_exe, tmp_path, same_directory):
    with run_target([str(target_exe), "--threads", "3", "--heap", "64"]) as t:
        start = threading.Barrier(2)
        results: Dict[str, dumplib.DumpResult] = {}
        failures: List[BaseException] = []
        spans: Dict[str, List[float]] = {}

        def dump(name: str, kind: str) -> None:
            # One directory: both get the name dumplib chooses in the same second; the second to be
            # placed takes the next free -N name instead of failing after its stop.
            out = tmp_path / ("shared" if same_directory else name)
            out.mkdir(exist_ok=True)
            try:
                start.wait(30)
                spans[name] = [time.monotonic()]
                results[name] = dumplib.create_dump(t.pid, str(out), kind)
            except BaseException as exc:  # noqa: B036 - the test reports it
                failures.append(exc)
            finally:
                spans[name].append(time.monotonic())

        workers = [threading.Thread(target=dump, args=("a", "full")), threading.Thread(target=dump, args=("b", "full"))]
        for w in workers:
            w.start()
        for w in workers:
            w.join(300)
        assert not any(w.is_alive() for w in workers), "a dump never ended"
        assert failures == [] and sorted(results) == ["a", "b"], failures
        # Each call was under way while the other was: both held the target at once.
        assert max(s[0] for s in spans.values()) < min(s[1] for s in spans.values()), spans
        for name, result in results.items():
            assert os.path.dirname(result.path) == str(tmp_path / ("shared" if same_directory else name))
            assert os.path.exists(result.path + ".json")
            out = gdb(str(target_exe), result.path, "info threads", f"x/s {t.marker_address}")
            assert _threads_in(out) == t.threads, out
            assert f'"{t.marker.decode()}"' in out, out
        assert results["a"].path != results["b"].path
        t.assert_running_untraced()


def test_a_snapshot_dump_gives_the_turn_back_once_the_target_runs_again(target_exe, tmp_path):
    """While a snapshot dump copies from its clone (the target long running again), a second dump of
    the same process is not kept waiting: the turn is for the stop, not for the copy."""
    with run_target([str(target_exe), "--heap", "64"]) as t:
        copying = threading.Event()
        second_done = threading.Event()
        outcome: Dict[str, object] = {}

        def hold_the_copy(written: int, _elapsed: float) -> None:
            if written and not copying.is_set():
                copying.set()
                second_done.wait(60)  # the snapshot's copy waits here until the second dump has ended

        def snapshot_dump() -> None:
            try:
                outcome["snapshot"] = dumplib.create_dump(t.pid, str(tmp_path / "snap"), "full", snapshot=True,
                                                          progress=hold_the_copy)
            except BaseException as exc:  # noqa: B036 - the test reports it
                outcome["snapshot"] = exc

        (tmp_path / "snap").mkdir()
        (tmp_path / "plain").mkdir()
        first = threading.Thread(target=snapshot_dump)
        first.start()
        try:
            assert copying.wait(120), "the snapshot dump never started copying"
            second = dumplib.create_dump(t.pid, str(tmp_path / "plain"), "mini")
            assert first.is_alive(), "the snapshot's copy was not held: this test proved nothing"
        finally:
            second_done.set()
            first.join(120)
        snap = outcome["snapshot"]
        assert isinstance(snap, dumplib.DumpResult) and snap.snapshot, snap
        assert os.path.exists(second.path) and os.path.exists(snap.path)
        t.assert_running_untraced()


def test_a_dump_asked_for_from_inside_another_dumps_callback_is_refused_at_once(target_exe, tmp_path):
    """The same thread asking for a second stop of a process it is stopping would wait for itself."""
    with run_target([str(target_exe), "--heap", "32"]) as t:
        inner: List[BaseException] = []

        def progress(written: int, _elapsed: float) -> None:
            if written and not inner:
                try:
                    dumplib.create_dump(t.pid, str(tmp_path), "mini")
                except BaseException as exc:  # noqa: B036 - the test inspects it
                    inner.append(exc)

        started = time.monotonic()
        outer = dumplib.create_dump(t.pid, str(tmp_path), "full", progress=progress)
        assert inner and isinstance(inner[0], dumplib.DumpFailed) and inner[0].reason == "busy", inner
        assert time.monotonic() - started < 60, "the inner dump waited instead of being refused"
        assert os.path.exists(outer.path)
        t.assert_running_untraced()


def test_dumplib_ps_shows_a_full_dump_size_for_a_traced_process_and_for_itself(tmp_path):
    """A listing estimates every process it can read; the refusals (traced, this process) are for dumps."""
    require_strace = subprocess.run(["strace", "-V"], capture_output=True).returncode == 0
    assert require_strace, "strace is missing (.ci/run installs it)"
    traced = subprocess.Popen(["strace", "-f", "-o", os.devnull, "sleep", "600"])
    try:
        deadline = time.monotonic() + 30
        child = None
        while child is None and time.monotonic() < deadline:
            kids = [p for p in os.listdir("/proc") if p.isdigit()
                    and _ppid(int(p)) == traced.pid and _comm(int(p)) == "sleep"]
            child = int(kids[0]) if kids else None
            time.sleep(0.05)
        assert child is not None, "strace did not start sleep"
        rows = {p.pid: p for p in dumplib.processes()}
        assert rows[child].full_dump_bytes, rows[child]
        assert rows[os.getpid()].full_dump_bytes, rows[os.getpid()]
        with pytest.raises(dumplib.TargetRefused) as refused:
            dumplib.estimate(child)  # an estimate is of a dump to come: the refusal holds there
        assert refused.value.reason == "traced"
    finally:
        traced.kill()
        traced.wait()


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""
