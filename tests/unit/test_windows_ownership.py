"""Which files dumplib on Windows counts as its own, and so may delete (retention, stale temporaries).

stat names no owner on Windows (st_uid is always 0). WindowsHost.mine opens the file at the path
without following a reparse point, checks that handle is the very file the lstat described, and reads
its owner there (GetSecurityInfo): only a file this user owns is dumplib's (every file dumplib makes
names its owner, wrappers.private_sddl). Before, mine() was True for any file: a user who could write
the dump folder planted X.json (tool dumplib, X's size and sha256) beside someone else's X, and the
next `--keep` run deleted X.

Wine keeps no owner for a file (every file reads back as this user's, whatever was asked), so the rule
is shown here on real descriptors built from SDDL by Windows' own parser, on real files for what Wine
can show (the handle, the identity check), and on a file another account owns on real Windows only
(the workflow runs every test here: .github/workflows/windows.yml).
"""
import ctypes
import hashlib
import json
import os
import sys

import pytest

if sys.platform != "win32":
    pytest.skip("Windows backend: run inside Windows python.exe (real Windows, or Wine via the Wine tests)",
                allow_module_level=True)

import msvcrt  # noqa: E402

from dumplib._windows import advapi32, kernel32, private, wrappers  # noqa: E402
from dumplib._windows.host import WindowsHost  # noqa: E402
from dumplib._windows.ntdll import UNDER_WINE  # noqa: E402
from dumplib.retention import apply_retention  # noqa: E402
from dumplib.sidecar import TOOL  # noqa: E402

USER = wrappers.current_user_sid()
OTHER = "S-1-5-21-1111111111-2222222222-3333333333-1001"


def real_windows_only(reason: str) -> None:
    if UNDER_WINE:
        pytest.skip(f"real Windows only: {reason}")


def _owner_in(sddl: str):
    descriptor = ctypes.c_void_p()
    advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW(sddl, advapi32.SDDL_REVISION_1,
                                                                  ctypes.byref(descriptor), None)
    try:
        return private.read_descriptor(descriptor.value)[0]
    finally:
        kernel32.LocalFree(descriptor)


@pytest.mark.parametrize("sddl, directory, ours", [
    ("O:{u}D:P(A;;FA;;;{u})", False, True),
    ("O:SYD:P(A;;FA;;;{u})", False, False),  # a file SYSTEM owns: a service's, or the AeDebug handler's
    ("O:BAD:P(A;;FA;;;{u})", False, False),  # another elevated administrator's file
    ("O:{o}D:P(A;;FA;;;{u})", False, False),
    ("O:{u}D:P(A;;FA;;;{u})", True, True),
    ("O:BAD:P(A;;FA;;;{u})", True, True),  # an elevated administrator's os.mkdir
    ("O:SYD:P(A;;FA;;;{u})", True, True),
    ("O:{o}D:P(A;;FA;;;{u})", True, False),
], ids=["file-user", "file-system", "file-admins", "file-other", "dir-user", "dir-admins", "dir-system", "dir-other"])
def test_only_a_file_this_user_owns_counts_as_its_own(sddl, directory, ours):
    owner = _owner_in(sddl.format(u=USER, o=OTHER))
    assert private.owner_accepted(owner, USER, directory) is ours
    assert private.owner_accepted(None, USER, directory) is False  # no owner named: not proven


def _write(handle: int, body: bytes) -> None:
    fd = msvcrt.open_osfhandle(handle, os.O_WRONLY)
    try:
        os.write(fd, body)
    finally:
        os.close(fd)  # and the handle


def _made(path: str, body: bytes = b"x") -> None:
    """*path* made as dumplib makes every file: exclusive, this user's own, private (create_new_file)."""
    _write(wrappers.create_new_file(path), body)


def test_a_file_dumplib_made_is_its_own_and_only_with_its_path_and_its_identity(tmp_path):
    mine, other = str(tmp_path / "a.dmp"), str(tmp_path / "b.dmp")
    _made(mine)
    _made(other)
    host = WindowsHost()
    assert host.mine(os.lstat(mine), mine) is True
    assert host.mine(os.lstat(str(tmp_path)), str(tmp_path)) is True  # a directory this user made
    assert host.mine(os.lstat(mine)) is False  # no path: nothing to judge by
    assert host.mine(os.lstat(other), mine) is False  # the path now holds another file than the lstat saw
    assert host.mine(os.lstat(mine), str(tmp_path / "gone")) is False


def _sidecar_for(path: str, finished_at: str) -> None:
    body = open(path, "rb").read()
    with open(path + ".json", "w") as f:
        json.dump({"tool": TOOL, "dump": os.path.basename(path), "sha256": hashlib.sha256(body).hexdigest(),
                   "size": len(body), "finished_at": finished_at}, f)


def test_retention_never_removes_a_file_another_account_owns_beside_a_planted_sidecar(tmp_path):
    """The review's attack on real Windows: a file owned by Administrators (this elevated runner names
    that owner in the file's descriptor, as another administrator's new file has it), a sidecar that
    vouches for it, and this user's own newer dump; `--keep 1` must leave the other's file alone."""
    real_windows_only("Wine keeps no file owner: every file reads back as this user's")
    victim = str(tmp_path / "victim.db")
    descriptor = ctypes.c_void_p()
    advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW(f"O:BAD:P(A;;FA;;;BA)(A;;FA;;;{USER})",
                                                                  advapi32.SDDL_REVISION_1, ctypes.byref(descriptor),
                                                                  None)
    try:
        attrs = kernel32.SECURITY_ATTRIBUTES()
        attrs.nLength = ctypes.sizeof(attrs)
        attrs.lpSecurityDescriptor = descriptor.value
        handle = kernel32.CreateFileW(victim, kernel32.GENERIC_WRITE, 0, ctypes.addressof(attrs),
                                      kernel32.CREATE_NEW, kernel32.FILE_ATTRIBUTE_NORMAL, None)
    finally:
        kernel32.LocalFree(descriptor)
    _write(int(handle), b"precious" * 100)
    assert wrappers.file_security(victim).startswith("O:BA"), wrappers.file_security(victim)
    _sidecar_for(victim, "2000-01-01T00:00:00+00:00")
    new = str(tmp_path / "new.dmp")
    _made(new, b"y")
    _sidecar_for(new, "2030-01-01T00:00:00+00:00")
    assert apply_retention(str(tmp_path), keep=1, max_total=None, protect=new, host=WindowsHost()) == []
    assert os.path.exists(victim) and os.path.exists(new)


def test_retention_still_removes_this_users_own_older_dump(tmp_path):
    old, new = str(tmp_path / "old.dmp"), str(tmp_path / "new.dmp")
    _made(old, b"old")
    _made(new, b"new")
    for path, when in ((old, "2000-01-01T00:00:00+00:00"), (new, "2030-01-01T00:00:00+00:00")):
        # the sidecar is dumplib's own too: made exclusive and private, as placement makes it
        body = open(path, "rb").read()
        _made(path + ".json", json.dumps({"tool": TOOL, "dump": os.path.basename(path), "finished_at": when,
                                          "sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}).encode())
    assert apply_retention(str(tmp_path), keep=1, max_total=None, protect=new, host=WindowsHost()) == [old]
    assert sorted(os.listdir(tmp_path)) == ["new.dmp", "new.dmp.json"]
