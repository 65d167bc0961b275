"""The AeDebug handler reports each crash in the Application event log (issue 17: "an event-log line"):
an information event for a dump written, a warning for anything else, one line whatever the crashed
program is called, and a log that fails never costs the crash its dump record.

Checked against the recording fake of Win32 (tests/winfake.py) on every OS; that the event reaches
the real log is the workflow's (tests/unit/test_windows_postmortem.py, real Windows only)."""
import importlib
import json
import sys
import types

import pytest

from winfake import fake_windows

INFORMATION, WARNING = 0x4, 0x2


@pytest.fixture()
def aedebug(monkeypatch):
    if sys.platform != "win32":  # the registry module exists on Windows only; the handler's logging needs none of it
        winreg = types.ModuleType("winreg")
        winreg.KEY_WOW64_64KEY, winreg.KEY_WOW64_32KEY = 0x0100, 0x0200  # constants read at import
        monkeypatch.setitem(sys.modules, "winreg", winreg)
    with fake_windows(monkeypatch) as ns:
        monkeypatch.delitem(sys.modules, "dumplib._windows.aedebug", raising=False)
        monkeypatch.delitem(sys.modules, "dumplib._windows.eventlog", raising=False)
        platform = sys.platform
        monkeypatch.setattr(sys, "platform", "win32")  # as fake_windows does for its own imports
        module = importlib.import_module("dumplib._windows.aedebug")
        monkeypatch.setattr(sys, "platform", platform)
        module.fake = ns.fake
        # The log line goes through CreateFileW (a reparse point is never followed), which the fake backs
        # with no file: appended plainly here; test_windows_trust.py writes the real one in Windows' python.
        monkeypatch.setattr(module, "_append_line", _append)
        yield module


def _append(path, line):
    with open(path, "a", encoding="ascii") as f:
        f.write(line)


def _events(fake):
    return [(c.args[1], c.args[3], c.args[7][0]) for c in fake.named("ReportEventW")]


def test_a_written_dump_is_an_information_event_and_a_refusal_a_warning(aedebug, tmp_path):
    hostile = "C:\\evil\nprocess 1: wrote C:\\x (full)\r\n.exe"  # a real newline and CR in its name
    aedebug._log({"dir": str(tmp_path), "outcome": "written", "pid": 77, "exe": hostile, "exception": "C0000005",
                  "path": str(tmp_path / "a.dmp"), "kind": "mini"})
    aedebug._log({"dir": str(tmp_path), "outcome": "rate-limited", "pid": 78, "exe": hostile,
                  "exception": "C0000005", "why": "3 dumps in 10 minutes"})
    (t1, id1, text1), (t2, id2, text2) = _events(aedebug.fake)
    assert (t1, id1) == (INFORMATION, aedebug.EVENT_WRITTEN) and (t2, id2) == (WARNING, aedebug.EVENT_NOT_WRITTEN)
    assert text1.startswith("process 77 (") and "wrote" in text1 and "rate-limited: " in text2
    assert not any(ch in text1 + text2 for ch in "\r\n"), (text1, text2)  # the program's name forges no line
    sources = [c.args[1] for c in aedebug.fake.named("RegisterEventSourceW")]
    assert sources == [aedebug.EVENT_SOURCE] * 2
    assert len(aedebug.fake.named("DeregisterEventSource")) == 2  # every source handle given back
    lines = (tmp_path / "postmortem.log").read_text().splitlines()
    assert [json.loads(line)["outcome"] for line in lines] == ["written", "rate-limited"]


def test_an_event_log_that_fails_costs_nothing_else(aedebug, tmp_path):
    aedebug.fake.impls["ReportEventW"] = lambda *args: aedebug.fake.fail(1502)  # ERROR_LOG_FILE_FULL
    aedebug._log({"dir": str(tmp_path), "outcome": "written", "pid": 9, "exe": "a.exe", "path": "x", "kind": "mini"})
    assert len(aedebug.fake.named("DeregisterEventSource")) == 1
    assert json.loads((tmp_path / "postmortem.log").read_text())["pid"] == 9
