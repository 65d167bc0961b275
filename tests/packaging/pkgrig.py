"""Shared by the packaging tests: the source tree, a copy of it, and an environment without this suite's paths."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Dict, NamedTuple

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
    # PYTHONDONTWRITEBYTECODE makes setuptools print "byte-compiling is disabled" warnings of its own.
    dropped = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != bindir)
    env.update(extra)
    return env


def copy_tree(where: Path) -> Path:
    """A copy of the source tree (so builds and venvs never write into the checkout)."""
    shutil.copytree(ROOT, where, ignore=NOT_SOURCE, symlinks=True)
    return where
