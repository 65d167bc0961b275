"""The Wine rig's own rule for a python.exe that Wine ends silently (winrig.Rig._ended_silently).

Two CI runs saw a Windows python.exe end with status 1 and nothing on stdout or stderr, mid-suite: no
traceback, no dumplib line. What the Wine tests run always says something when it fails (Python's
traceback, dumplib's line or JSON; none of their scripts exits 1 in silence), so the rig takes that
signature for Wine's own end of the process, names it in the session's summary and runs the command
once more. Here a command that ends exactly so, on purpose (os._exit(1)), shows the rule: run twice and
no more, each end named, the second one the test's failure; a command that must not run twice, once.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import winrig
from winrig import WineEndedSilently, windows_path

pytestmark = pytest.mark.wine


def _ends_silently(runs: Path) -> str:
    return f"with open(r'{windows_path(runs)}', 'a') as f: f.write('ran\\n')\nimport os; os._exit(1)"


@pytest.mark.parametrize("again", [True, False])
def test_a_silent_status_1_is_named_and_run_once_more_then_fails_the_test(rig, tmp_path, again):
    runs = tmp_path / "runs"
    before = len(winrig.SILENT_ENDS)
    try:
        with pytest.raises(WineEndedSilently) as ended:
            rig.run_python(["-c", _ends_silently(runs)], again_on_silent_end=again)
        notes = winrig.SILENT_ENDS[before:]
    finally:
        del winrig.SILENT_ENDS[before:]  # on purpose here: not for the session's summary
    assert runs.read_text() == ("ran\nran\n" if again else "ran\n")
    assert len(notes) == (2 if again else 1), notes
    if again:
        assert "Run once more." in notes[0], notes
    assert str(ended.value) == notes[-1] and "Not run again." in notes[-1], notes
    assert "ended with status 1" in notes[-1] and "test_rig_wine.py" in notes[-1], notes[-1]


def test_a_status_1_that_says_something_is_returned_as_it_is(rig, tmp_path):
    runs = tmp_path / "runs"
    script = f"with open(r'{windows_path(runs)}', 'a') as f: f.write('ran\\n')\nraise SystemExit('said')"
    done = rig.run_python(["-c", script])
    assert done.returncode == 1 and "said" in done.stderr and runs.read_text() == "ran\n"
