"""Verification of a written minidump (dumplib/_windows/verify.py): a stream the mask asks for and the
file lacks removes the dump on Windows, and is a warning naming Wine under Wine; a full volume is
blamed for an unusable file. Run on every OS against the recording Win32 fake (tests/winfake.py);
the real files are read back in test_windows_native.py."""
import pytest

from dumplib.errors import DumpFailed
from dumplib.kinds import DumpKind
from dumplib._windows.masks import MiniDumpType, windows_mask
from winfake import PID, win  # noqa: F401 - win is the fixture

HANDLE_DATA_STREAM = 12  # HandleDataStream, what WithHandleData asks for


class Dump:
    """A read-back dump holding *streams* (and threads, modules, its pid: usable otherwise)."""

    def __init__(self, streams):
        self.streams, self.pid, self.problems = set(streams), PID, []
        self.threads, self.modules, self.memory = ["thread"], ["module"], []

    def has_stream(self, stream):
        return stream in self.streams


def _reading(win, monkeypatch, dump):
    monkeypatch.setattr(win.verify.minidump, "read_minidump", lambda path: dump)


def test_a_stream_the_mask_asks_for_and_the_file_lacks_removes_the_dump(win, monkeypatch):
    mask = windows_mask(DumpKind.MINI, None) | MiniDumpType.WithHandleData
    _reading(win, monkeypatch, Dump(streams=[]))
    monkeypatch.setattr(win.verify, "UNDER_WINE", False)
    with pytest.raises(DumpFailed) as caught:
        win.verify.check_dump("C:\\dumps\\x.tmp", PID, mask)
    assert caught.value.reason == "unverified" and "WithHandleData" in str(caught.value)


def test_under_wine_a_missing_stream_is_a_warning_naming_wine(win, monkeypatch):
    mask = windows_mask(DumpKind.MINI, None) | MiniDumpType.WithHandleData
    _reading(win, monkeypatch, Dump(streams=[]))
    monkeypatch.setattr(win.verify, "UNDER_WINE", True)
    (warning,) = win.verify.check_dump("C:\\dumps\\x.tmp", PID, mask)
    assert "Wine" in warning and "WithHandleData" in warning


def test_a_dump_holding_what_its_mask_asks_for_passes_without_a_word(win, monkeypatch):
    mask = windows_mask(DumpKind.MINI, None) | MiniDumpType.WithHandleData
    wanted = set(win.verify.streams_for_mask(mask))
    assert HANDLE_DATA_STREAM in wanted
    _reading(win, monkeypatch, Dump(streams=wanted))
    monkeypatch.setattr(win.verify, "UNDER_WINE", False)
    assert win.verify.check_dump("C:\\dumps\\x.tmp", PID, mask) == ()


def test_an_unusable_file_on_a_full_volume_is_disk_full(win, monkeypatch):
    empty = Dump(streams=[])
    empty.threads = []  # "no thread list": what a write cut short by a full volume leaves
    _reading(win, monkeypatch, empty)

    def space(path, caller, total, free):
        caller._obj.value, total._obj.value, free._obj.value = 4096, 100 << 30, 4096
        return 1

    win.fake.impls["GetDiskFreeSpaceExW"] = space
    with pytest.raises(DumpFailed) as caught:
        win.verify.check_dump("C:\\dumps\\x.tmp", PID, windows_mask(DumpKind.MINI, None))
    assert caught.value.reason == "disk-full"
