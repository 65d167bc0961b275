"""Shared test helpers. `CI=true` turns "this machine lacks X" skips into failures."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List

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
