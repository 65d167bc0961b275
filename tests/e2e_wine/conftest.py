"""The Wine rig as pytest fixtures: one prefix and wineserver per session."""
from __future__ import annotations

import sys
from typing import Any, Iterator

import pytest

from helpers import require
from winrig import Rig, WineUnavailable

pytestmark = pytest.mark.wine

# These tests drive Windows python.exe under Wine from Linux. On Windows itself the same promises
# run natively in tests/unit/test_windows_*.py (see .github/workflows/windows.yml).
collect_ignore_glob = ["test_*.py"] if sys.platform == "win32" else []


@pytest.fixture(scope="session")
def rig() -> Iterator[Rig]:
    require(Rig.wine_available(), "Wine is not installed (apt-get install wine wine64); Windows backend untested")
    rig = Rig()
    try:
        rig.setup()
    except WineUnavailable as exc:
        require(False, f"the Wine rig could not be set up: {exc}")
    yield rig
    rig.stop_server()


@pytest.fixture()
def target(rig: Rig) -> Iterator[Any]:
    with rig.target() as t:
        yield t

