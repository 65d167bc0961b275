"""The session's process handle: taking the dump's access reopens the process by pid, and a new
handle that is not kept is closed on every path, GetProcessTimes failing on it included (it leaked).

Run on every OS against the recording fake of Win32 (tests/winfake.py), which counts the handles it
hands out and the ones closed; a failing GetProcessTimes cannot be made to happen on demand on Windows.
"""
import pytest

from dumplib.errors import DumpError
from winfake import dump, open_kinds, plan_for, win  # noqa: F401 - win is the fixture

ERROR_ACCESS_DENIED = 5


def test_a_reopened_handle_is_closed_when_its_start_time_cannot_be_read(win):
    platform = win.backend.WindowsPlatform()
    plan = plan_for()
    with platform.open(plan.target, for_dump=True) as session:
        assert open_kinds(win.fake) == ["process"]
        win.fake.impls["GetProcessTimes"] = lambda *args: win.fake.fail(ERROR_ACCESS_DENIED)
        with pytest.raises(DumpError):
            session._take_dump_access()
        assert open_kinds(win.fake) == ["process"]  # the kept one only
    assert open_kinds(win.fake) == []


def test_the_reopened_handle_replaces_the_kept_one(win):
    platform = win.backend.WindowsPlatform()
    plan = plan_for()
    with platform.open(plan.target, for_dump=True) as session:
        walk = session.handle
        session._take_dump_access()
        assert session.handle != walk and open_kinds(win.fake) == ["process"]
    assert open_kinds(win.fake) == []
