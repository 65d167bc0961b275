"""The public API's type hints hold: mypy --strict accepts every Python example in README.md and
docs/, and the package itself type-checks for Linux and for Windows."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import require

ROOT = Path(__file__).resolve().parents[2]


def _mypy(*args: str) -> subprocess.CompletedProcess:
    try:
        import mypy  # noqa: F401
    except ImportError:
        if sys.platform == "win32":  # the Wine rig's Windows Python carries no mypy
            pytest.skip("type-checked from Linux (mypy --platform win32); this Windows Python has no mypy")
        require(False, "mypy is not installed (pip install -e .[test])")
    return subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir=/dev/null", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_every_python_example_in_the_docs_passes_mypy_strict(tmp_path):
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    files = []
    for doc in docs:
        for i, block in enumerate(re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)):
            f = tmp_path / f"{doc.stem.replace('-', '_')}_{i}.py"
            f.write_text(block)
            files.append(str(f))
    assert len(files) >= 6
    done = _mypy("--strict", "--follow-imports=silent", *files)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("platform", ["linux", "win32"])
def test_the_package_and_the_command_type_check_strictly_on_each_platform(platform):
    done = _mypy("--strict", "--platform", platform, "dumplib", "cli")  # cli/ is the package dumplib_cli
    assert done.returncode == 0, done.stdout + done.stderr
