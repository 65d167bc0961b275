"""A session holds its target (a pidfd) from Platform.open to close and nothing outlives it: every
create_dump and estimate, whether it succeeds or is refused half way, leaves this process with the
file descriptors it had, and a session cannot be used once closed."""
import dataclasses
import gc
import os
from typing import List

import pytest

import dumplib
from dumplib._platform import Plan, WriteOptions, WriteReport
from dumplib._switch import current
from linuxrig import run_target

pytestmark = pytest.mark.linux


def _fds() -> List[str]:
    return sorted(os.listdir("/proc/self/fd"))


def test_dumps_and_estimates_leave_no_descriptor_behind_whatever_happens(target_exe, tmp_path):
    with run_target([str(target_exe), "--heap", "16"]) as t:
        dumplib.estimate(t.pid, "mini")  # the platform's modules and their one-time files, loaded first
        gc.collect()  # earlier tests' garbage (their targets' pipes) is closed now, not in the middle
        before = _fds()
        dumplib.estimate(t.pid, "full")
        first = dumplib.create_dump(t.pid, str(tmp_path), "mini")
        with pytest.raises(dumplib.DumpExists):
            dumplib.create_dump(t.pid, first.path, "mini")  # refused after the target was opened
        with pytest.raises(dumplib.InsufficientDiskSpace):
            dumplib.create_dump(t.pid, str(tmp_path), "full", min_free=1 << 62)  # refused by the guard, planned
        with pytest.raises(dumplib.TargetRefused):
            dumplib.create_dump(os.getpid(), str(tmp_path))  # refused by the platform's checks
        assert _fds() == before
        t.assert_running_untraced()


def test_a_closed_session_refuses_to_plan_or_write_and_closing_twice_is_harmless(target_exe, tmp_path):
    with run_target([str(target_exe)]) as t:
        platform = current()
        info = dumplib.resolve_target(t.pid)
        before = _fds()
        session = platform.open(info, for_dump=True)
        assert len(_fds()) == len(before) + 1  # the pidfd
        plan = session.plan(dumplib.DumpKind.MINI, None)
        session.close()
        session.close()
        assert _fds() == before
        with pytest.raises(dumplib.DumpFailed, match="after it was closed"):
            session.write(plan, str(tmp_path / "x.core"), WriteOptions(comment=None, signature="{}"))
        assert not (tmp_path / "x.core").exists()
        t.assert_running_untraced()


def test_what_goes_down_to_the_writer_is_frozen():
    """A plan is decided once: nothing on the way down may change it, nor a write's report after it."""
    plan = Plan(target=dumplib.ProcessInfo(1, "x"), kind=dumplib.DumpKind.MINI, flags=None)
    for value, field in ((plan, "kind"), (WriteOptions(comment=None, signature=""), "snapshot"),
                         (WriteReport(), "warnings")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, field, None)
