"""The unit tests inside Windows python.exe under Wine, started early and collected by their test.

The run (tests/unit's Windows test files, each in an interpreter of its own under its own bound, then the
rest in one) takes minutes, nearly all of it waiting on Wine's start-up and the Windows targets' own
waits. tests/e2e_wine/conftest.py starts it in a thread once collection is done, when
test_wine_dumps.py::test_unit_tests_pass_inside_windows_python is among the selected tests: it runs
beside the Linux tests that come first, and the test only checks what each run printed (the same checks
as when it ran them itself). No other Wine test starts before it is over (the session's rig waits for
it): they share the prefix and its registry (AeDebug).
"""
from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from winrig import Rig, WineUnavailable, windows_path

UNIT = Path(__file__).resolve().parent / "unit"
#: Seconds one Windows test file may take inside Wine (test_windows_watch.py, the slowest, takes ~2 min
#: at load 5 and a full dump of its targets up to 100 s at load 12 on a 2-CPU machine): a file that
#: hangs fails here, named, instead of the whole run timing out.
WINDOWS_FILE_BOUND = 900
#: Seconds the other unit tests, in one interpreter, may take (~1 min).
REST_BOUND = 600


def plan() -> Tuple[List[Path], List[Path]]:
    """(the Windows test files to run one by one, the fake-based files no run takes).

    The tests against the recording Win32 fake (tests/winfake.py) prove call order on every OS and already
    ran on this one; inside Wine they would only run the same fake again."""
    files = sorted(UNIT.glob("test_*.py"))
    fake_based = [p for p in files if "from winfake import" in p.read_text(encoding="utf-8")]
    windows = [p for p in files if p.name.startswith(("test_windows_", "test_win_")) and p not in fake_based]
    return windows, fake_based


@dataclass
class Ran:
    """One pytest run inside Wine: its arguments, bound, and what came of it."""

    args: List[str]
    bound: float
    returncode: Optional[int]  # None: still running at the bound (killed)
    stdout: str
    stderr: str
    seconds: float


class UnitRun:
    """The whole run in a thread: the rig set up, each pytest run in turn, each result kept."""

    def __init__(self) -> None:
        self.rig: Optional[Rig] = None
        self.setup_error: Optional[WineUnavailable] = None
        self.windows, self.fake_based = plan()
        self.runs: List[Ran] = []
        self._proc: Optional["subprocess.Popen[str]"] = None
        self._stopped = False
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    def start(self, rig: Optional[Rig] = None) -> "UnitRun":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, args=(rig,), name="wine-unit-run", daemon=True)
            self._thread.start()
        return self

    def started(self) -> bool:
        return self._thread is not None

    def wait(self) -> "UnitRun":
        """Once every run ended (each is bounded, so this is too: the sum of the bounds at most)."""
        assert self._thread is not None, "the Wine unit run was never started"
        self._thread.join()
        return self

    def stop(self) -> None:
        """Ends the run under way, if any, and the wineserver it started (the session ended before its
        test ran: the rig's own teardown, which stops the server too, may never have come)."""
        with self._lock:
            self._stopped = True
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()
        if self.rig is not None:
            self.rig.stop_server()

    def _run(self, rig: Optional[Rig]) -> None:
        try:
            self.rig = rig or Rig().setup()
        except WineUnavailable as exc:
            self.setup_error = exc
            return
        ignores = [f"--ignore={windows_path(p)}" for p in self.fake_based + self.windows]
        for args, bound in [*(([windows_path(p)], WINDOWS_FILE_BOUND) for p in self.windows),
                            ([windows_path(UNIT), *ignores], REST_BOUND)]:
            if self._stopped:
                return
            self.runs.append(self._pytest(args, bound))

    def _pytest(self, args: List[str], bound: float) -> Ran:
        assert self.rig is not None
        started = time.monotonic()
        with self._lock:
            if self._stopped:  # stop() came while the previous run ended: start no other
                return Ran(args, bound, None, "", "stopped before it began", 0.0)
            proc = subprocess.Popen(self.rig.python_cmd(["-m", "pytest", *args, "-q", "-p", "no:cacheprovider", "-rfEs", "--durations=15"]),
                                    env=self.rig.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            self._proc = proc
        try:
            out, err = proc.communicate(input="", timeout=bound)  # pipes, as run_python gives
            code: Optional[int] = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            try:  # bounded too: a Wine child still holding the pipes must not hold the session
                out, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                out, err = "", "its output was not closed within 60 s of the kill"
            code = None
        return Ran(args, bound, code, out, err, time.monotonic() - started)
