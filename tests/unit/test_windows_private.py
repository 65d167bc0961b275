"""The store retention key on Windows (issue #19): made this user's own with a protected DACL, opened
without following a reparse point, and judged on the opened handle by its owner and DACL.

The rule runs here on real security descriptors, built from SDDL by Windows' own
ConvertStringSecurityDescriptorToSecurityDescriptorW and read back with GetSecurityDescriptorOwner /
GetSecurityDescriptorDacl / GetAce, in the Windows interpreter (real Windows, or Wine through
tests/e2e_wine/test_wine_dumps.py::test_unit_tests_pass_inside_windows_python). What a file system
keeps (Wine keeps no descriptor for a file: it makes one up from the Unix mode) is shown on real
Windows only; tests/e2e_wine/test_egress_key_wine.py shows what Wine can (a Unix mode that lets others
read comes back as an Everyone entry, and the key is refused).
"""
import ctypes
import os
import subprocess
import sys
from ctypes import wintypes as wt

import pytest

if sys.platform != "win32":
    pytest.skip("Windows backend: run inside Windows python.exe (real Windows, or Wine via the Wine tests)",
                allow_module_level=True)

from dumplib._egress import signing  # noqa: E402
from dumplib._switch import current  # noqa: E402
from dumplib._windows import advapi32, kernel32, private, wrappers  # noqa: E402
from dumplib._windows.ntdll import UNDER_WINE  # noqa: E402
from dumplib.errors import InvalidArgument  # noqa: E402

USER = wrappers.current_user_sid()
OTHER = "S-1-5-21-1111111111-2222222222-3333333333-1001"  # a local account that is not this one


def real_windows_only(reason: str) -> None:
    if UNDER_WINE:
        pytest.skip(f"real Windows only: {reason}")


def _read_back(sddl: str):
    """(owner, ACEs) of the security descriptor *sddl*, built and read back by Windows itself."""
    descriptor = ctypes.c_void_p()
    advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW(sddl, advapi32.SDDL_REVISION_1,
                                                                  ctypes.byref(descriptor), None)
    try:
        owner, aces = private.read_descriptor(descriptor.value)
    finally:
        kernel32.LocalFree(descriptor)
    return owner, aces


def _verdict(sddl: str, directory: bool = False):
    """The rule's answer for the security descriptor *sddl*, built and read back by Windows itself."""
    owner, aces = _read_back(sddl)
    if directory:
        return private.descriptor_problem(owner, aces, USER, private.DIRECTORY_SECRET_RIGHTS,
                                          owners=(private.SYSTEM, private.ADMINISTRATORS), done="written to")
    return private.descriptor_problem(owner, aces, USER, private.FILE_SECRET_RIGHTS)


def test_the_descriptor_every_file_is_made_with_passes_and_reads_back_as_built():
    sddl = wrappers.private_sddl(USER)
    assert _verdict(sddl) is None
    owner, aces = _read_back(sddl)
    assert owner == USER
    assert [(a.kind, a.sid, a.mask) for a in aces] == [(0, USER, 0x1F01FF), (0, private.SYSTEM, 0x1F01FF),
                                                       (0, private.ADMINISTRATORS, 0x1F01FF)]


def test_where_no_owner_can_be_named_the_same_private_dacl_is_kept():
    """create_new_file's second try (ERROR_INVALID_OWNER: a share whose server does not know this account;
    only real Windows with such a share can show the error itself): no owner named, the same three ACEs."""
    without = wrappers.private_sddl(USER, owner=False)
    assert "O:" not in without and without == wrappers.private_sddl(USER)[len(f"O:{USER}"):]
    owner, aces = _read_back(without)
    assert [(a.kind, a.sid, a.mask) for a in aces] == [(0, USER, 0x1F01FF), (0, private.SYSTEM, 0x1F01FF),
                                                       (0, private.ADMINISTRATORS, 0x1F01FF)]


@pytest.mark.parametrize("sddl", [
    "O:{u}D:P(A;;FA;;;{u})",
    "O:{u}D:P(A;;FA;;;{u})(A;;FA;;;SY)(A;;FA;;;BA)",
    "O:{u}D:P(A;;FA;;;{u})(A;OICIIO;FA;;;WD)",  # inherit-only: handed to children, not on the file
    "O:{u}D:P(A;;FA;;;{u})(D;;FA;;;WD)",  # a denial grants nothing
    "O:{u}D:P(A;;FA;;;{u})(A;;RC;;;WD)",  # reading the ACL is not reading the key
    "O:{u}D:P(A;;FA;;;OW)",  # OWNER RIGHTS: the owner, who is this user
], ids=["user", "user-system-admins", "inherit-only-everyone", "deny-everyone", "everyone-read-control",
        "owner-rights"])
def test_a_descriptor_only_this_user_system_and_administrators_can_use_passes(sddl):
    assert _verdict(sddl.format(u=USER)) is None


@pytest.mark.parametrize("sddl, said", [
    ("O:{o}D:P(A;;FA;;;{u})", "belongs to another user"),
    ("O:BAD:P(A;;FA;;;{u})", "belongs to another user"),  # even Administrators: the key must be the user's
    ("O:{u}D:P(A;;FA;;;{u})(A;;FR;;;WD)", "S-1-1-0 (Everyone)"),
    ("O:{u}D:P(A;;FA;;;{u})(A;;GR;;;AU)", "S-1-5-11 (Authenticated Users)"),
    ("O:{u}D:P(A;;FA;;;{u})(A;;0x1;;;BU)", "S-1-5-32-545 (Users)"),  # FILE_READ_DATA alone
    ("O:{u}D:P(A;;FA;;;{u})(A;;FW;;;{o})", "can be read or changed by S-1-5-21-1111111111"),
    ("O:{u}D:P(A;;FA;;;{u})(A;;WD;;;{o})", "can be read or changed"),  # WRITE_DAC: could grant itself read
    ("O:{u}D:P(A;;FA;;;{u})(A;;WO;;;{o})", "can be read or changed"),  # WRITE_OWNER: could take the file
    ("O:{u}D:P(D;;FA;;;{o})(A;;FA;;;{u})(A;;FR;;;{o})", "can be read or changed"),  # denials are not counted on
    ("O:{u}", "has no DACL"),  # (Wine 8 parses D:NO_ACCESS_CONTROL as an empty DACL, not a NULL one)
], ids=["other-owner", "admins-owner", "everyone-read", "authenticated-generic-read", "users-read-data",
        "other-write", "other-write-dac", "other-write-owner", "other-denied-then-allowed", "no-dacl"])
def test_a_descriptor_that_lets_anyone_else_in_or_names_another_owner_is_refused(sddl, said):
    why = _verdict(sddl.format(u=USER, o=OTHER))
    assert why is not None and said in why, why


def test_the_key_directory_may_be_read_by_others_but_not_written():
    assert _verdict(f"O:{USER}D:P(A;;FA;;;{USER})(A;;FR;;;WD)", directory=True) is None
    assert _verdict(f"O:BAD:P(A;;FA;;;{USER})(A;;FA;;;BA)", directory=True) is None  # an elevated mkdir's owner
    why = _verdict(f"O:{USER}D:P(A;;FA;;;{USER})(A;;0x2;;;BU)", directory=True)  # FILE_ADD_FILE
    assert why is not None and "can be written to by S-1-5-32-545 (Users)" in why
    why = _verdict(f"O:{OTHER}D:P(A;;FA;;;{USER})", directory=True)
    assert why is not None and "belongs to another user" in why


def test_the_key_is_made_and_read_back_and_its_handle_passes(tmp_path, monkeypatch):
    monkeypatch.setenv("USERPROFILE", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv(signing.KEY_VARIABLE, raising=False)
    host = current().host()
    key = signing.load_key(host)
    path = tmp_path / ".dumplib" / "egress-key"
    assert len(key) == 32 and path.read_text().strip() == key.hex()
    assert signing.load_key(host) == key
    assert [p.name for p in path.parent.iterdir()] == ["egress-key"]  # its temporary is gone
    fd = host.open_secret(str(path))
    try:
        assert host.secret_problem(fd) is None
    finally:
        os.close(fd)


def test_a_directory_given_as_the_key_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(signing.KEY_VARIABLE, str(tmp_path))
    with pytest.raises(InvalidArgument, match=r"is not a regular file|cannot be read"):
        signing.load_key(current().host())


def _set_security(path, sddl):
    """Give the file *path* the owner and DACL of *sddl* (SetFileSecurityW), as another tool would."""
    descriptor = ctypes.c_void_p()
    advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW(sddl, advapi32.SDDL_REVISION_1,
                                                                  ctypes.byref(descriptor), None)
    try:
        set_file_security = ctypes.WinDLL("advapi32", use_last_error=True).SetFileSecurityW
        set_file_security.argtypes = [wt.LPCWSTR, wt.DWORD, ctypes.c_void_p]
        set_file_security.restype = wt.BOOL
        what = (advapi32.OWNER_SECURITY_INFORMATION | advapi32.DACL_SECURITY_INFORMATION
                | 0x80000000)  # PROTECTED_DACL_SECURITY_INFORMATION
        assert set_file_security(str(path), what, descriptor), ctypes.WinError(ctypes.get_last_error())
    finally:
        kernel32.LocalFree(descriptor)


def test_a_key_file_others_can_read_is_refused_on_the_handle(tmp_path, monkeypatch):
    real_windows_only("Wine 8 keeps no security descriptor for a file (no xattr either): SetFileSecurityW succeeds"
                      " and GetSecurityInfo reads back one made from the Unix mode")
    key = tmp_path / "shared-key"
    key.write_text("ab" * 32 + "\n")
    monkeypatch.setenv(signing.KEY_VARIABLE, str(key))
    # Owned by the user: an elevated runner's new files are the Administrators group's.
    _set_security(key, f"O:{USER}D:P(A;;FA;;;{USER})")
    assert len(signing.load_key(current().host())) == 32
    _set_security(key, f"O:{USER}D:P(A;;FA;;;{USER})(A;;FR;;;BU)")
    with pytest.raises(InvalidArgument, match=r"can be read or changed by S-1-5-32-545 \(Users\)"):
        signing.load_key(current().host())
    _set_security(key, f"O:BAD:P(A;;FA;;;{USER})")
    with pytest.raises(InvalidArgument, match=r"belongs to another user \(its owner is S-1-5-32-544"):
        signing.load_key(current().host())


def test_a_key_directory_that_is_a_junction_is_refused_and_nothing_is_made_through_it(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    made = subprocess.run(["cmd", "/c", "mklink", "/J", str(tmp_path / ".dumplib"), str(elsewhere)],
                          capture_output=True, text=True)
    if made.returncode != 0 or not os.path.isdir(tmp_path / ".dumplib"):
        real_windows_only(f"Wine's cmd makes no junction ({made.stdout.strip()} {made.stderr.strip()})")
    monkeypatch.setenv("USERPROFILE", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv(signing.KEY_VARIABLE, raising=False)
    with pytest.raises(InvalidArgument, match=r"private directory"):
        signing.load_key(current().host())
    assert list(elsewhere.iterdir()) == []


def test_a_key_file_that_is_a_symbolic_link_is_refused_never_followed(tmp_path, monkeypatch):
    victim = tmp_path / "victim-key"
    victim.write_text("cd" * 32 + "\n")
    link = tmp_path / "link-key"
    try:
        os.symlink(victim, link)
    except OSError as exc:
        pytest.skip(f"NOT RUN: cannot create a symlink here ({exc})")
    if not os.path.lexists(link):
        real_windows_only("Wine's CreateSymbolicLinkW reports success and creates nothing, and Wine shows a Unix"
                          " symlink as the file it points at (no reparse point to see)")
    monkeypatch.setenv(signing.KEY_VARIABLE, str(link))
    with pytest.raises(InvalidArgument, match=r"symbolic link"):
        signing.load_key(current().host())
    # The handle check alone, without the name check in front of it: the link itself is what was opened.
    host = current().host()
    fd = host.open_secret(str(link))
    try:
        assert "reparse point" in (host.secret_problem(fd) or "")
    finally:
        os.close(fd)
