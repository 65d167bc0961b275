from __future__ import annotations

import os
import subprocess
import sys
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


#: A program embedding Python, as many do: Py_Initialize() with no program name (Python then finds
#: sys.executable by a search of PATH for python3), then the script named by its first argument.
EMBEDDER_C = r"""
#include <Python.h>
int main(int argc, char **argv) {
    Py_Initialize();
    FILE *f = fopen(argv[1], "r");
    if (!f) return 3;
    int rc = PyRun_SimpleFile(f, argv[1]);
    fclose(f);
    Py_Finalize();
    return rc ? 1 : 0;
}
"""


@pytest.fixture(scope="session")
def embedder(tmp_path_factory) -> Path:
    """The directory holding `embedder`, EMBEDDER_C compiled against this interpreter's own libpython
    (its -config: the venv's python resolves to it), so that it runs the Python whose site-packages a
    test's PYTHONPATH hands it."""
    config = os.path.realpath(sys.executable) + "-config"
    require(have("gcc") and os.access(config, os.X_OK),
            f"gcc or {config} is missing (apt-get install gcc python3-dev)")
    where = tmp_path_factory.mktemp("embedder")
    (where / "embedder.c").write_text(EMBEDDER_C)
    flags = subprocess.run([config, "--cflags", "--ldflags", "--embed"], capture_output=True, text=True, check=True,
                           timeout=60).stdout.split()
    subprocess.run(["gcc", "-o", str(where / "embedder"), str(where / "embedder.c"), *flags], check=True, timeout=120)
    return where
