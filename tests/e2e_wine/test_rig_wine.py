"""The Wine rig's own rule for a python.exe that Wine ends silently (winrig.Rig._ended_silently).

Two CI runs saw a Windows python.exe end with status 1 and nothing on stdout or stderr, mid-suite: no
traceback, no dumplib line. What the Wine tests run always says something when it fails (Python's
traceback, dumplib's line or JSON; none of their scripts exits 1 in silence), so the rig takes that
signature for Wine's own end of the process, names it in the session's summary and runs the
command once more. Here a command that ends exactly so, on purpose (os._exit(1)), shows the rule: run
twice and no more, each end named, the second one's note the test's stderr.
"""
from __future__ import annotations

import pytest

import winrig
from winrig import windows_path

pytestmark = pytest.mark.wine


def test_a_silent_status_1_is_named_and_run_once_more_then_left_to_fail(rig, tmp_path):
    runs = tmp_path / "runs"
    script = f"with open(r'{windows_path(runs)}', 'a') as f: f.write('ran\\n')\nimport os; os._exit(1)"
    before = len(winrig.SILENT_ENDS)
    try:
        done = rig.run_python(["-c", script])
        notes = winrig.SILENT_ENDS[before:]
    finally:
        del winrig.SILENT_ENDS[before:]  # on purpose here: not for the session's summary
    assert runs.read_text() == "ran\nran\n"
    assert done.returncode == 1 and done.stdout == ""
    assert len(notes) == 2 and "Run once more." in notes[0] and done.stderr == notes[1], notes
    assert "ended with status 1" in done.stderr and "Not run again" in done.stderr, done.stderr
