"""The Wine rig as pytest fixtures: one prefix and wineserver per session."""
from __future__ import annotations

import sys
from typing import Any, Iterator

import pytest

from helpers import require
import winrig
from winrig import Rig, WineUnavailable
from winunit import UnitRun

pytestmark = pytest.mark.wine

# These tests drive Windows python.exe under Wine from Linux. On Windows itself the same promises
# run natively in tests/unit/test_windows_*.py (see .github/workflows/windows.yml).
collect_ignore_glob = ["test_*.py"] if sys.platform == "win32" else []

#: The test that collects the early Wine unit run (tests/winunit.py).
UNIT_RUN_TEST = "test_wine_dumps.py::test_unit_tests_pass_inside_windows_python"
_unit_run = UnitRun()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Starts the Wine unit run beside the tests that come before its own (see tests/winunit.py)."""
    if session.config.option.collectonly or sys.platform == "win32" or not Rig.wine_available():
        return
    if any(
item.nodeid.endswith(UNIT_RUN_TEST) for item in session.items):
        _unit_run.start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    _unit_run.stop()  # a session cut short (-x, Ctrl-C) leaves no Windows pytest or wineserver running


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Each python.exe Wine ended with status 1 and nothing said (Rig._ended_silently), whether or not
    its test failed on it: a rare end seen in two CI runs, named here until its cause is known."""
    if winrig.SILENT_ENDS:
        terminalreporter.section("python.exe ended with status 1 and nothing said (most likely by Wine)")
    for note in winrig.SILENT_ENDS:
        terminalreporter.write_line(note)


@pytest.fixture(scope="session")
def rig() -> Iterator[Rig]:
    require(Rig.wine_available(), "Wine is not installed (apt-get install wine wine64); Windows backend untested")
    if _unit_run.started():
        # Its rig, once its run is over: no other Wine test shares the prefix with it.
        _unit_run.wait()
        if _unit_run.setup_error is not None:
            require(False, f"the Wine rig could not be set up: {_unit_run.setup_error}")
        assert _unit_run.rig is not None
        rig = _unit_run.rig
    else:
        rig = Rig()
        try:
            rig.setup()
        except WineUnavailable as exc:
            require(False, f"the Wine rig could not be set up: {exc}")
    yield rig
    rig.stop_server()


@pytest.fixture(scope="session")
def unit_run(rig: Rig) -> UnitRun:
    """The Wine unit run, over: the early one, or (its test selected some other way) one run now."""
    return _unit_run.start(rig).wait()


@pytest.fixture()
def target(rig: Rig) -> Iterator[Any]:
    with rig.target() as t:
        yield t
