from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from helpers import require
from linuxrig import Target, build_target, have, run_target

pytestmark = pytest.mark.linux


@pytest.fixture(scope="session")
def target_exe(tmp_path_factory) -> Path:
    require(have("gcc"), "gcc is not installed; the C test target cannot be built")
    return build_target(tmp_path_factory.mktemp("bin"))


@pytest.fixture()
def ctarget(target_exe) -> Iterator[Target]:
    with run_target([str(target_exe)]) as t:
        yield t



@pytest.fixture(scope="session", autouse=True)
def _need_gdb() -> None:
    require(have("gdb"), "gdb is not installed (apt-get install gdb); cores cannot be checked")
