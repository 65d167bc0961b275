"""Fixtures for the packaging tests: the sdist and the wheel, built once per session as a release would be.

The wheel is built *from the sdist* (what `python -m build` does), offline (`--no-isolation`: the build
backend is the one installed here, nothing is fetched), with every Python warning an error.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, NamedTuple

import pytest

from helpers import require

ROOT = Path(__file__).resolve().parents[2]
#: What a copy of the tree leaves out: VCS data, venvs, build output, caches.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                    "*.pyc", "*.core", "*.dmp")


class Dists(NamedTuple):
    sdist: Path
    wheel: Path
    log: str  # everything the build printed


def clean_env(**extra: str) -> Dict[str, str]:
    """The environment without this suite's PYTHONPATH and venv: installed code must stand alone."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE")}
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != bindir)
    env.update(extra)
    return env


def copy_tree(where: Path) -> Path:
    """A copy of the source tree (so builds and venvs never write into the checkout)."""
    shutil.copytree(ROOT, where, ignore=NOT_SOURCE, symlinks=True)
    return where


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
