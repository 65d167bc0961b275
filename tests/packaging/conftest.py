"""Fixtures for the packaging tests: the sdist and the wheel, built once per session as a release would be.

The wheel is built *from the sdist* (what `python -m build` does), offline (`--no-isolation`: the build
backend is the one installed here, nothing is fetched), with every Python warning an error.
"""
from __future__ import annotations

import subprocess
import sys
from typing import Iterator

import pytest

from helpers import require
from pkgrig import Dists, clean_env, copy_tree


@pytest.fixture(scope="session")
def dists(tmp_path_factory) -> Iterator[Dists]:
    try:
        import build  # noqa: F401
        import setuptools
    except ImportError as exc:
        require(False, f"{exc.name} is not installed here (pip install -e '.[test]' brings build and setuptools>=77)")
    require(int(setuptools.__version__.split(".")[0]) >= 77,
            f"setuptools {setuptools.__version__} predates SPDX license expressions (pip install 'setuptools>=77')")
    top = tmp_path_factory.mktemp("dists")
    source = copy_tree(top / "src")
    out = top / "dist"
    done = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
                          capture_output=True, text=True, timeout=600,
                          env=clean_env(PYTHONWARNINGS="error", PIP_NO_INDEX="1"))
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    (sdist,), (wheel,) = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    yield Dists(sdist, wheel, log)
