"""The AeDebug handler's registry round trip and its arguments, in the Windows interpreter (real
Windows, or Wine through tests/e2e_wine/test_wine_dumps.py::test_unit_tests_pass_inside_windows_python).

Uninstall puts back what install found, value by value with its type. winreg gives the data of
REG_BINARY, REG_NONE and any type it does not decode as bytes: the backup kept them as a bare hex
string and wrote that string back for every type but REG_BINARY (TypeError under Wine for REG_NONE,
uninstall failing); a REG_SZ that looked like hex could not be told from it. Now marked {"hex": ...}.
"""
import json
import os
import sys

import pytest

if sys.platform != "win32":
    pytest.skip("Windows backend: run inside Windows python.exe (real Windows, or Wine via the Wine tests)",
                allow_module_level=True)

import winreg  # noqa: E402

from dumplib._windows import aedebug  # noqa: E402
from dumplib.errors import InvalidArgument  # noqa: E402

VIEW = winreg.KEY_WOW64_64KEY
VALUES = {
    "none": (winreg.REG_NONE, b"\x01\x02"),
    "binary": (winreg.REG_BINARY, b"\x00\xff"),
    "hexlike": (winreg.REG_SZ, "0102"),  # text, not bytes, though it reads as hex
    "text": (winreg.REG_SZ, "winedbg --auto %ld %ld"),
    "expand": (winreg.REG_EXPAND_SZ, "%SystemRoot%\\x.exe"),
    "dword": (winreg.REG_DWORD, 1),
    "qword": (winreg.REG_QWORD, 1 << 40),
    "multi": (winreg.REG_MULTI_SZ, ["a", "b"]),
    "link": (winreg.REG_LINK, b"\x61\x00"),  # a type winreg does not decode: bytes
}


@pytest.fixture
def keys():
    """Two scratch keys under HKLM\\SOFTWARE (install's own keys are left alone); removed after."""
    if not aedebug._is_admin():
        pytest.skip("NOT RUN: writing HKLM needs an administrator")
    names = [f"SOFTWARE\\dumplib-test-{os.getpid()}-{i}" for i in range(2)]
    yield names
    for name in names:
        try:
            winreg.DeleteKeyEx(winreg.HKEY_LOCAL_MACHINE, name, VIEW, 0)
        except FileNotFoundError:
            pass


def _read_raw(path):
    with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, path, 0, winreg.KEY_READ | VIEW) as key:
        return {name: winreg.QueryValueEx(key, name)[::-1] for name in VALUES}


def test_every_value_type_is_put_back_exactly_through_the_json_backup(keys):
    source, target = keys
    with winreg.CreateKeyEx(winreg.HKEY_LOCAL_MACHINE, source, 0, winreg.KEY_WRITE | VIEW) as key:
        for name, (kind, data) in VALUES.items():
            winreg.SetValueEx(key, name, 0, kind, data)
    backup = json.loads(json.dumps(aedebug.read_values(source, list(VALUES), VIEW)))  # as stored in the registry
    aedebug.write_values(target, backup, VIEW)
    assert _read_raw(target) == _read_raw(source)
    assert _read_raw(target)["hexlike"] == (winreg.REG_SZ, "0102")


def test_a_backup_made_before_the_mark_still_restores_its_binary_value(keys):
    _, target = keys
    aedebug.write_values(target, {"binary": [winreg.REG_BINARY, "00ff"]}, VIEW)
    with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, target, 0, winreg.KEY_READ | VIEW) as key:
        assert winreg.QueryValueEx(key, "binary") == (b"\x00\xff", winreg.REG_BINARY)


@pytest.mark.parametrize("seconds", [0, -1, float("nan")])
def test_max_seconds_must_be_more_than_zero(tmp_path, seconds):
    if not aedebug._is_admin():
        pytest.skip("NOT RUN: install refuses a non-administrator before it reads its arguments")
    # A folder that does not exist: were the check missing, install would refuse it before writing anything.
    with pytest.raises(InvalidArgument, match="--max-seconds must be more than 0"):
        aedebug.install(str(tmp_path / "missing"), max_seconds=seconds)
