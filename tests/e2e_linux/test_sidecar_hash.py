"""The sidecar's sha256 is computed behind the writer once the target runs again; while it is stopped
the hashing thread runs nothing (it waits in the kernel, so it can never hold the GIL the copy needs).

The target's state and the hashing thread's wake-ups (its voluntary context switches) and system call
are read from the kernel (/proc) from inside the dump's own progress callback, which the writer calls
while the target is stopped; the hash is checked with sha256sum.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

import dumplib
from linuxrig import run_target, sha256sum, thread_facts

FUTEX = 202  # x86-64: where a thread waiting on a lock sits


def _states(pid: int) -> set:
    states = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        states.add(stat[stat.rindex(")") + 2])
    return states


@pytest.mark.parametrize("heap", [40, 256], ids=["written-in-the-stop", "mapped-or-staged"])
def test_the_hasher_runs_nothing_while_the_target_is_stopped(target_exe, tmp_path, heap):
    """A core under 64 MiB is written during the stop (where a hasher following it would have work),
    a larger one mapped or staged: either way the hashing thread neither wakes nor leaves its wait
    while the target is stopped (sampled every 2 ms by a thread of the test's), and the sidecar's
    sha256 is sha256sum's."""
    during_stop = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                stopped = _states(target) == {"t"}
                hashers = [t.native_id for t in threading.enumerate() if t.name == "dumplib-sha256"]
                facts = [thread_facts(t) for t in hashers if t]
            except (OSError, StopIteration):
                continue  # a thread ending between the listing and the read
            if stopped and facts:
                during_stop.append(facts)
            done.wait(0.002)

    with run_target([str(target_exe), "--heap", str(heap)]) as t:
        target = t.pid
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            result = dumplib.create_dump(t.pid, tmp_path / "x.core", "full")
        finally:
            done.set()
            sampler.join(10)
        t.assert_running_untraced()
    assert len(during_stop) >= 2, f"too few samples while the target was stopped: {during_stop}"
    assert all(len(f) == 1 for f in during_stop), during_stop  # one hashing thread
    switches = {f[0][0] for f in during_stop}
    calls = {f[0][1] for f in during_stop}
    assert len(switches) == 1 and calls == {FUTEX}, during_stop
    sidecar = json.loads(Path(result.path + ".json").read_text())
    assert sidecar["sha256"] == sha256sum(result.path) == result.sha256


def test_a_second_ctrl_c_while_the_hasher_is_given_up_on_still_removes_the_partial_file(target_exe, tmp_path,
                                                                                       monkeypatch):
    """A Ctrl-C during the copy, then a second one while the failure path waits for the hashing thread
    to end: the partial file is still removed (a review found 1 GiB left after a double Ctrl-C)."""
    from dumplib._hashing import FollowingHasher

    abandon = FollowingHasher.abandon
    waits: list = []

    def interrupted(self: FollowingHasher) -> None:
        abandon(self)
        waits.append(1)
        raise KeyboardInterrupt  # the second Ctrl-C, arriving in that wait

    def progress(written: int, elapsed: float) -> None:
        if written:
            raise KeyboardInterrupt  # the first

    monkeypatch.setattr(FollowingHasher, "abandon", interrupted)
    with run_target([str(target_exe), "--heap", "40"]) as t:
        with pytest.raises(KeyboardInterrupt):
            dumplib.create_dump(t.pid, tmp_path / "x.core", "full", progress=progress)
        t.assert_running_untraced()
    assert waits == [1], "the failure path did not wait for the hasher"
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())
