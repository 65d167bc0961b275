"""Shared test helpers. `CI=true` turns "this machine lacks X" skips into failures."""
from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator, List

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip loudly when a tool is missing here; in CI a missing tool is a failure, never a skip."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(f"NOT RUN: {reason}")


def leftovers(directory: "os.PathLike[str] | str") -> List[str]:
    """dumplib temporary files left in *directory* (there must never be any after a call returns)."""
    return sorted(p.name for p in Path(directory).iterdir() if p.name.startswith(".dumplib-"))


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *, read_only: bool = False, options: str = "") -> Iterator[Path]:
    """A real tmpfs volume of *size* mounted at *path* for the duration (root only; skipped otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("NOT RUN: mounting a tmpfs volume needs root")
    path.mkdir()
    options = f"size={size}" + (",ro" if read_only else "") + (f",{options}" if options else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)
