"""The session's process handle: taking the dump's access reopens the process by pid, and a new
handle that is not kept is closed on every path, GetProcessTimes failing on it included (it leaked).

Run on every OS against the recording fake of Win32 (tests/winfake.py), which counts the handles it
hands out and the ones closed; a failing GetProcessTimes cannot be made to happen on demand on Windows.
"""
import pytest

from dumplib.errors import DumpError
from winfake import PID, dump, open_kinds, plan_for, win  # noqa: F401 - win is the fixture

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


# -- a service dumped from an interactive session without a snapshot is warned of ------------------------
# Windows' HandlerRoutine documentation: CTRL_LOGOFF_EVENT / CTRL_SHUTDOWN_EVENT reach services only;
# an interactive dumplib is ended at logoff or shutdown with no console event, mid-write if it was writing.


def _sessions(win, own, target):
    def session_of(pid, out):
        out._obj.value = target if pid == PID else own
        return 1

    win.fake.impls["ProcessIdToSessionId"] = session_of


@pytest.mark.parametrize("own, target, warned", [(1, 0, True), (0, 0, False), (1, 1, False), (2, 1, False)],
                         ids=["interactive-over-service", "service-over-service", "same-session", "two-users"])
def test_a_service_dumped_without_a_snapshot_from_an_interactive_session_is_warned_of(win, own, target, warned):
    _sessions(win, own, target)
    report = dump(win)
    said = [w for w in report.warnings if "a logoff or shutdown now ends this dumplib" in w]
    assert bool(said) is warned, report.warnings
    if warned:
        assert f"process {PID} runs in session 0" in said[0] and "--snapshot" in said[0]


def test_the_session_unknown_is_no_warning(win):
    win.fake.impls["ProcessIdToSessionId"] = lambda pid, out: win.fake.fail(ERROR_ACCESS_DENIED)
    assert not [w for w in dump(win).warnings if "logoff" in w]
