"""Makes tests/ importable (helpers, winrig) for every test module."""
import sys
from pathlib import Path

import pytest

TESTS = str(Path(__file__).resolve().parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)


@pytest.fixture()
def outdir(tmp_path: Path) -> Path:
    """An empty directory for dumps (tests assert on everything in it)."""
    d = tmp_path / "dumps"
    d.mkdir()
    return d
