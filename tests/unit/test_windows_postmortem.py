"""What only real Windows can prove about postmortem (run by .github/workflows/windows.yml, as administrator):
AeDebug hands the handler a JIT_DEBUG_INFO, so the dump of a crashed python.exe carries the crash's
exception stream and faulting thread; and WER LocalDumps, enabled by dumplib, writes a crash's dump
into the folder dumplib checked. Wine gives no JIT_DEBUG_INFO and has no WER: tests/e2e_wine covers
the rest (registry round trips, a crash under AeDebug dumped through the debugger path)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Tuple

import pytest


def _real_windows() -> bool:
    if sys.platform != "win32":
        return False
    from dumplib._windows.ntdll import UNDER_WINE

    return not UNDER_WINE


# Under Wine these ran too (sys.platform is win32 there) and each waited out its crash's bounds:
# Wine has no WER, and its AeDebug hands no JIT_DEBUG_INFO, so no dump ever came (minutes per test).
pytestmark = pytest.mark.skipif(not _real_windows(), reason="real Windows only: AeDebug's JIT_DEBUG_INFO and"
                                " WER LocalDumps crash dumps (the Wine tests cover the registry round trips)")

CRASH = ["-c", "import ctypes; ctypes.c_char.from_address(8).value"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dumplib_cli", *args], capture_output=True, text=True, timeout=300)


def _wait_for(folder: Path, pattern: str, timeout: float = 180) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(folder.glob(pattern))
        if found:
            time.sleep(2)  # let the writer finish and rename
            return list(folder.glob(pattern))
        time.sleep(0.5)
    return []


@pytest.fixture
def trusted() -> Iterator[Tuple[str, Path]]:
    """(an interpreter under Program Files with dumplib installed, a fresh folder under Program Files):
    what `postmortem install` accepts (dumplib/_windows/trust.py). The workflow makes the interpreter
    (DUMPLIB_TEST_TRUSTED_PYTHON); the tool cache's and the editable checkout are refused, rightly."""
    python = os.environ.get("DUMPLIB_TEST_TRUSTED_PYTHON")
    if not python:
        if os.environ.get("CI"):
            pytest.fail("DUMPLIB_TEST_TRUSTED_PYTHON is not set: the workflow's trusted-interpreter step is missing")
        pytest.skip("NOT RUN: set DUMPLIB_TEST_TRUSTED_PYTHON to a python.exe under Program Files with dumplib"
                    " installed (not editable), as .github/workflows/windows.yml makes it")
    folder = Path(os.environ["ProgramFiles"]) / f"dumplib-crashes-{os.getpid()}"
    folder.mkdir()
    try:
        yield python, folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_install_refuses_the_checkouts_interpreter_and_a_folder_in_the_profile(tmp_path: Path) -> None:
    """The test's own interpreter (tool cache, editable dumplib in the checkout) and a folder in this
    user's profile: refused, nothing registered."""
    from dumplib._windows.aedebug import AEDEBUG, AEDEBUG_VALUES, VIEWS, read_values

    before = {n: read_values(AEDEBUG, AEDEBUG_VALUES, v) for n, v in VIEWS.items()}
    done = _cli("postmortem", "install", "--dir", str(tmp_path), "--json")
    if done.returncode == 0:
        _cli("postmortem", "uninstall", "--force")
    assert done.returncode != 0 and "can be changed by" in done.stdout, done.stdout + done.stderr
    assert {n: read_values(AEDEBUG, AEDEBUG_VALUES, v) for n, v in VIEWS.items()} == before


def test_aedebug_crash_has_the_exception_stream_and_the_process_ends(trusted: Tuple[str, Path]) -> None:
    from minidump.minidumpfile import MinidumpFile

    from dumplib._windows.aedebug import AEDEBUG, AEDEBUG_VALUES, VIEWS, read_values

    python, tmp_path = trusted
    before = {n: read_values(AEDEBUG, AEDEBUG_VALUES, v) for n, v in VIEWS.items()}
    done = subprocess.run([python, "-m", "dumplib_cli", "postmortem", "install", "--dir", str(tmp_path), "--min-free",
                           "1M", "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    try:
        crash = subprocess.run([sys.executable, *CRASH], capture_output=True, timeout=300)
        # Ended as without a debugger: the filter's EXCEPTION_EXECUTE_HANDLER, exit code = exception code.
        assert crash.returncode & 0xFFFFFFFF == 0xC0000005, crash.returncode
        dumps = _wait_for(tmp_path, "*.dmp")
    finally:
        assert _cli("postmortem", "uninstall", "--force").returncode == 0
    assert {n: read_values(AEDEBUG, AEDEBUG_VALUES, v) for n, v in VIEWS.items()} == before
    assert len(dumps) == 1, (tmp_path / "postmortem.log").read_text()
    md = MinidumpFile.parse(str(dumps[0]))
    exc = md.exception.exception_records[0]
    assert exc.ExceptionRecord.ExceptionCode == 0xC0000005
    assert exc.ExceptionRecord.ExceptionInformation[1] == 8
    assert exc.ThreadId in [t.ThreadId for t in md.threads.threads]
    assert json.loads(Path(str(dumps[0]) + ".json").read_text())["comment"] == "postmortem: C0000005"
    # Windows hands a JIT_DEBUG_INFO that holds up: the handler read it, it did not have to attach.
    [record] = [json.loads(line) for line in (tmp_path / "postmortem.log").read_text().splitlines()]
    assert record["via"] == "jit" and record["jit"] == "valid", record


def test_wer_localdumps_writes_the_crash_into_the_checked_folder(tmp_path: Path) -> None:
    done = _cli("postmortem", "wer", "enable", "--dir", str(tmp_path), "--exe", "python.exe", "--per-dump", "64M",
                "--count", "2", "--min-free", "1M", "--allow-system-drive")
    assert done.returncode == 0, done.stderr
    try:
        subprocess.run([sys.executable, *CRASH], capture_output=True, timeout=300)
        dumps = _wait_for(tmp_path, "*.dmp")
    finally:
        assert _cli("postmortem", "wer", "disable", "--exe", "python.exe").returncode == 0
    assert dumps, "WER wrote no dump into the LocalDumps folder"
