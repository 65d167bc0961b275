"""What the AeDebug handler runs, imports and writes in must be the machine administrators' alone
(dumplib/_windows/trust.py): the handler runs in every crashing process's context, services' (SYSTEM)
included. Before, install checked nothing: a per-user Python, a dumplib anyone could edit or a dump
folder anyone could write to were run and written by SYSTEM at the next service crash.

The rule runs on real security descriptors (built from SDDL by Windows' own parser), on real folders
Windows or Wine makes with a DACL (Wine keeps no owner, but turns the DACL into a Unix mode and back:
a folder anyone may write to reads back so), and on real Windows on a per-user venv and a folder under
Program Files (the workflow runs every test here: .github/workflows/windows.yml).
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

from dumplib._windows import advapi32, aedebug, kernel32, private, trust, wrappers  # noqa: E402
from dumplib._windows.ntdll import UNDER_WINE  # noqa: E402

USER = wrappers.current_user_sid()
TI = trust.TRUSTED_INSTALLER
#: C:\Program Files as Windows ships it (icacls, Windows 10/11): what a Python for all users lives under.
PROGRAM_FILES = (f"O:{TI}D:P(A;;FA;;;{TI})(A;CIIO;GA;;;{TI})(A;;0x1301bf;;;SY)(A;OICIIO;GA;;;SY)"
                 "(A;;0x1301bf;;;BA)(A;OICIIO;GA;;;BA)(A;;0x1200a9;;;BU)(A;OICIIO;GXGR;;;BU)(A;OICIIO;GA;;;CO)"
                 "(A;;0x1200a9;;;AC)(A;OICIIO;GXGR;;;AC)")
#: C:\ as Windows ships it: Authenticated Users may add folders to the root itself (AD), not remove any.
VOLUME_ROOT = ("O:SYD:(A;OICI;FA;;;BA)(A;OICI;FA;;;SY)(A;OICI;0x1200a9;;;BU)(A;OICIIO;SDGXGWGR;;;AU)"
               "(A;;0x4;;;AU)")


def real_windows_only(reason: str) -> None:
    if UNDER_WINE:
        pytest.skip(f"real Windows only: {reason}")


def _verdict(sddl: str, rights: int):
    descriptor = ctypes.c_void_p()
    advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW(sddl, advapi32.SDDL_REVISION_1,
                                                                  ctypes.byref(descriptor), None)
    try:
        owner, aces = private.read_descriptor(descriptor.value)
    finally:
        kernel32.LocalFree(descriptor)
    return trust.machine_problem(owner, aces, rights)


def test_program_files_and_a_volume_root_are_the_administrators_alone():
    assert _verdict(PROGRAM_FILES, trust.HELD_DIRECTORY_RIGHTS) is None
    assert _verdict(VOLUME_ROOT, trust.ABOVE_RIGHTS) is None  # adding a folder to C:\ steers nothing
    assert _verdict("O:BAD:P(A;;FA;;;BA)(A;;FA;;;SY)(A;;0x1200a9;;;WD)", trust.CODE_FILE_RIGHTS) is None


@pytest.mark.parametrize("sddl, rights, said", [
    ("O:{u}D:P(A;;FA;;;SY)(A;;FA;;;BA)", trust.CODE_FILE_RIGHTS, "is owned by S-1-5-21"),  # a per-user python.exe
    ("O:BAD:P(A;;FA;;;BA)(A;;FA;;;{u})", trust.HELD_DIRECTORY_RIGHTS, "can be changed by S-1-5-21"),  # a profile
    ("O:BAD:P(A;;FA;;;BA)(A;;0x2;;;BU)", trust.HELD_DIRECTORY_RIGHTS, "S-1-5-32-545 (Users)"),  # add a module
    ("O:BAD:P(A;;FA;;;BA)(A;;0x4;;;AU)", trust.HELD_DIRECTORY_RIGHTS, "S-1-5-11 (Authenticated Users)"),  # a package
    ("O:BAD:P(A;;FA;;;BA)(A;;0x40;;;BU)", trust.ABOVE_RIGHTS, "(Users)"),  # delete child: swap a folder below
    ("O:BAD:P(A;;FA;;;BA)(A;;WD;;;WD)", trust.ABOVE_RIGHTS, "(Everyone)"),  # write the DACL: grant itself
    ("O:BAD:P(A;;FA;;;BA)(A;;0x10000;;;BU)", trust.CODE_FILE_RIGHTS, "(Users)"),  # DELETE: replace the file
    ("O:BA", trust.CODE_FILE_RIGHTS, "has no DACL"),
], ids=["user-owns-python", "user-may-write-folder", "users-add-file", "authenticated-add-subdir",
        "users-delete-child-above", "everyone-write-dac-above", "users-delete-file", "no-dacl"])
def test_anything_another_account_could_change_is_refused(sddl, rights, said):
    why = _verdict(sddl.format(u=USER), rights)
    assert why is not None and said in why, why


def _made_directory(path: str, sddl: str) -> None:
    """*path* made, then given the DACL of *sddl* (protected: nothing inherited) by SetNamedSecurityInfoW
    (Wine ignores a DACL given to CreateDirectoryW, but turns one set later into the Unix mode)."""
    os.mkdir(path)
    descriptor = ctypes.c_void_p()
    advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW(sddl, advapi32.SDDL_REVISION_1,
                                                                  ctypes.byref(descriptor), None)
    try:
        present, acl, defaulted = wt.BOOL(), ctypes.c_void_p(), wt.BOOL()
        advapi32.GetSecurityDescriptorDacl(descriptor, ctypes.byref(present), ctypes.byref(acl),
                                           ctypes.byref(defaulted))
        setter = ctypes.WinDLL("advapi32", use_last_error=True).SetNamedSecurityInfoW
        setter.argtypes = [wt.LPWSTR, ctypes.c_int, wt.DWORD, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                           ctypes.c_void_p]
        setter.restype = wt.DWORD
        code = setter(path, advapi32.SE_FILE_OBJECT, advapi32.DACL_SECURITY_INFORMATION | 0x80000000, None, None,
                      acl, None)  # 0x80000000: PROTECTED_DACL_SECURITY_INFORMATION
        assert code == 0, code
    finally:
        kernel32.LocalFree(descriptor)


def test_a_folder_anyone_may_write_to_is_refused_on_the_handle_there_and_below(tmp_path):
    """A real folder made with a DACL that lets Everyone write (Wine: mode 0777, read back as such)."""
    open_to_all = str(tmp_path / "open")
    _made_directory(open_to_all, f"D:P(A;OICI;FA;;;{USER})(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FA;;;WD)")
    why = trust.chain_problem(open_to_all, trust.HELD_DIRECTORY_RIGHTS)
    assert why is not None and why.startswith(open_to_all) and "S-1-1-0 (Everyone)" in why, why
    below = os.path.join(open_to_all, "crashes")  # missing: whoever may add to its parent could make it
    why = trust.chain_problem(below, trust.HELD_DIRECTORY_RIGHTS)
    assert why is not None and why.startswith(open_to_all), why


def test_under_wine_a_folder_only_its_user_may_write_passes_and_that_user_is_trusted_only_there(tmp_path):
    """Wine's one user is its administrator (every file reads back as theirs): trusted there, never on Windows."""
    assert (USER in trust.machine_admins()) is UNDER_WINE
    if not UNDER_WINE:
        why = trust.chain_problem(str(tmp_path), trust.HELD_DIRECTORY_RIGHTS)  # in this user's own profile
        assert why is not None and USER in why, why
        return
    closed = str(tmp_path / "closed")
    _made_directory(closed, f"D:P(A;OICI;FA;;;{USER})(A;OICI;FA;;;SY)(A;OICI;0x1200a9;;;WD)")
    why = trust.chain_problem(closed, trust.HELD_DIRECTORY_RIGHTS)
    assert why is None or not why.startswith(closed), why  # it is not the one refused (an ancestor may be)


def test_the_handler_is_refused_for_a_per_user_venv(tmp_path):
    """A venv in this user's profile (with the system site-packages, so dumplib imports from it): install
    is refused and says which of its folders this user could change, and what to do instead."""
    real_windows_only("Wine's embeddable Python makes no venv, and Wine keeps no file owner")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True,
                   timeout=300)
    python = str(venv / "Scripts" / "python.exe")
    dumps = os.path.join(os.environ["ProgramFiles"], f"dumplib-test-{os.getpid()}")
    os.mkdir(dumps)
    try:
        with pytest.raises(aedebug.PostmortemRefused) as refused:
            aedebug._check_handler_trusted(python, dumps)
    finally:
        os.rmdir(dumps)
    said = refused.value.message
    assert str(tmp_path) in said and "can be changed by" in said and "Program Files" in said, said


def test_a_tree_under_program_files_passes(tmp_path):
    """What an administrator makes under Program Files (owned by Administrators, the ACL it inherits):
    a folder, a file in it, a missing entry below it; and the dump folder install would accept."""
    real_windows_only("Wine keeps no file owner and has no Program Files ACL")
    base = os.path.join(os.environ["ProgramFiles"], f"dumplib-test-{os.getpid()}")
    os.mkdir(base)
    try:
        with open(os.path.join(base, "module.py"), "w") as f:
            f.write("x = 1\n")
        assert trust.chain_problem(base, trust.HELD_DIRECTORY_RIGHTS) is None
        assert trust.chain_problem(os.path.join(base, "module.py"), trust.CODE_FILE_RIGHTS) is None
        assert trust.chain_problem(os.path.join(base, "missing.zip"), trust.CODE_FILE_RIGHTS) is None
    finally:
        os.remove(os.path.join(base, "module.py"))
        os.rmdir(base)


def test_the_log_line_is_never_appended_through_a_planted_link(tmp_path):
    """postmortem.log is opened without following a reparse point: a symbolic link planted there is refused."""
    victim = tmp_path / "victim.txt"
    victim.write_text("kept\n")
    link = tmp_path / "postmortem.log"
    try:
        os.symlink(victim, link)
    except OSError as exc:
        pytest.skip(f"NOT RUN: cannot create a symlink here ({exc})")
    if not os.path.lexists(link):
        real_windows_only("Wine's CreateSymbolicLinkW reports success and creates nothing")
    aedebug._log({"dir": str(tmp_path), "pid": 1, "outcome": "failed", "why": "test"})
    assert victim.read_text() == "kept\n"


def test_the_log_line_is_appended_to_a_real_file(tmp_path):
    aedebug._append_line(str(tmp_path / "postmortem.log"), '{"a": 1}\n')
    aedebug._append_line(str(tmp_path / "postmortem.log"), '{"b": 2}\n')
    assert (tmp_path / "postmortem.log").read_bytes() == b'{"a": 1}\n{"b": 2}\n'


def test_at_a_crash_a_dump_folder_changed_since_install_is_refused_and_the_process_released(tmp_path, monkeypatch):
    """The handler checks DIR again at each crash: a folder that became writable by Everyone since
    install gets no dump and no log line (the event log says `untrusted-dir`), and the crashed process
    is released at once. The configuration is handed in (the shared registry is not touched); a rate
    slot asked for would mean the check was passed."""
    open_to_all = str(tmp_path / "open")
    _made_directory(open_to_all, f"D:P(A;OICI;FA;;;{USER})(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FA;;;WD)")
    monkeypatch.setattr(aedebug, "_ours_get", lambda name: {"dir": open_to_all, "kind": "mini", "max_seconds": 60}
                        if name == "Config" else None)

    def no_slot(exe, max_per):
        raise aedebug._Refused("rate-limited", "the handler went past the folder check")

    monkeypatch.setattr(aedebug, "_take_rate_slot", no_slot)
    logged = []
    monkeypatch.setattr(aedebug, "_log", logged.append)
    k32 = ctypes.WinDLL("kernel32", use_last_error=True)
    k32.CreateEventW.restype = wt.HANDLE
    k32.CreateEventW.argtypes = [ctypes.c_void_p, wt.BOOL, wt.BOOL, wt.LPCWSTR]
    event = k32.CreateEventW(None, True, False, None)
    assert event
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert aedebug.main(["-p", str(child.pid), "-e", str(event)]) == 0
        assert k32.WaitForSingleObject(wt.HANDLE(event), 0) == 0  # signalled: the crashed process goes on to end
    finally:
        child.kill()
        child.wait(30)
        kernel32.CloseHandle(event)
    [record] = logged
    assert record["outcome"] == "untrusted-dir" and record["dir"] is None, record
    assert record["why"].startswith(open_to_all) and "S-1-1-0 (Everyone)" in record["why"], record
    assert os.listdir(open_to_all) == []
