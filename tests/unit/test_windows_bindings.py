"""Every Windows prototype against its documented signature, and each binding exercised for real.
Runs inside Windows python.exe (real Windows in the workflow; Wine through
tests/e2e_wine/test_wine_dumps.py::test_unit_tests_pass_inside_windows_python)."""
import ctypes
import os
import sys

import pytest

if sys.platform != "win32":
    pytest.skip("Windows bindings: run inside Windows python.exe by the Wine tests", allow_module_level=True)

from ctypes import wintypes as wt  # noqa: E402

from dumplib import AccessDenied, InvalidDumpPath, ProcessNotFound  # noqa: E402
from dumplib._windows import advapi32, dbghelp, kernel32, structs, wrappers  # noqa: E402
from dumplib._windows._common import Win32Error, check_bool, check_handle, check_nonzero, check_status, describe, split_hresult  # noqa: E402,E501
from dumplib._windows.ntdll import UNDER_WINE  # noqa: E402

BINDINGS = (kernel32, advapi32, dbghelp)

# From the Win32 documentation: (return type, parameter count, how failure shows). None: the
# function cannot fail, or its caller judges the result itself (documented there).
DOCUMENTED = {
    "OpenProcess": (wt.HANDLE, 3, check_handle),
    "CloseHandle": (wt.BOOL, 1, check_bool),
    "GetCurrentProcess": (wt.HANDLE, 0, None),
    "GetCurrentProcessId": (wt.DWORD, 0, None),
    "GetExitCodeProcess": (wt.BOOL, 2, check_bool),
    "GetProcessTimes": (wt.BOOL, 5, check_bool),
    "IsWow64Process": (wt.BOOL, 2, check_bool),
    "IsWow64Process2": (wt.BOOL, 3, check_bool),
    "GetSystemDirectoryW": (wt.UINT, 2, check_nonzero),
    "CreateFileW": (wt.HANDLE, 7, check_handle),
    "FlushFileBuffers": (wt.BOOL, 1, check_bool),
    "GetFileSizeEx": (wt.BOOL, 2, check_bool),
    "SetFilePointerEx": (wt.BOOL, 4, check_bool),
    "SetEndOfFile": (wt.BOOL, 1, check_bool),
    "CreateToolhelp32Snapshot": (wt.HANDLE, 2, check_handle),
    "Process32FirstW": (wt.BOOL, 2, None),
    "Process32NextW": (wt.BOOL, 2, None),
    "LocalFree": (wt.HLOCAL, 1, None),
    "VirtualQueryEx": (ctypes.c_size_t, 4, None),
    "GetVolumePathNameW": (wt.BOOL, 3, check_bool),
    "GetFinalPathNameByHandleW": (wt.DWORD, 4, check_nonzero),
    "GetDriveTypeW": (wt.UINT, 1, None),
    "GetVolumeInformationW": (wt.BOOL, 8, check_bool),
    "OpenProcessToken": (wt.BOOL, 3, check_bool),
    "LookupPrivilegeValueW": (wt.BOOL, 3, check_bool),
    "AdjustTokenPrivileges": (wt.BOOL, 6, check_bool),
    "GetTokenInformation": (wt.BOOL, 5, None),
    "ConvertSidToStringSidW": (wt.BOOL, 2, check_bool),
    "ConvertStringSecurityDescriptorToSecurityDescriptorW": (wt.BOOL, 4, check_bool),
    "GetNamedSecurityInfoW": (wt.DWORD, 8, None),
    "GetSecurityInfo": (wt.DWORD, 8, check_status),
    "GetSecurityDescriptorOwner": (wt.BOOL, 3, check_bool),
    "GetSecurityDescriptorDacl": (wt.BOOL, 4, check_bool),
    "GetAclInformation": (wt.BOOL, 4, check_bool),
    "GetAce": (wt.BOOL, 3, check_bool),
    "GetFileInformationByHandle": (wt.BOOL, 2, check_bool),
    "GetFileType": (wt.DWORD, 1, None),
    "ConvertSecurityDescriptorToStringSecurityDescriptorW": (wt.BOOL, 5, check_bool),
    "MiniDumpWriteDump": (wt.BOOL, 7, check_bool),
    "GlobalMemoryStatusEx": (wt.BOOL, 1, check_bool),
    "K32GetProcessMemoryInfo": (wt.BOOL, 3, check_bool),
    "GetDiskFreeSpaceExW": (wt.BOOL, 4, check_bool),
    "SetConsoleCtrlHandler": (wt.BOOL, 2, check_bool),
    "ProcessIdToSessionId": (wt.BOOL, 2, check_bool),
    "OpenSCManagerW": (wt.HANDLE, 3, check_handle),
    "OpenServiceW": (wt.HANDLE, 3, check_handle),
    "QueryServiceStatusEx": (wt.BOOL, 5, check_bool),
    "CloseServiceHandle": (wt.BOOL, 1, check_bool),
    # Windows 8.1+ only (absent under Wine); each returns its Win32 error code itself.
    "PssCaptureSnapshot": (wt.DWORD, 4, check_status),
    "PssQuerySnapshot": (wt.DWORD, 4, check_status),
    "PssFreeSnapshot": (wt.DWORD, 2, check_status),
}
PSS = {"PssCaptureSnapshot", "PssQuerySnapshot", "PssFreeSnapshot"}


def _prototypes():
    for module in BINDINGS:
        for name, fn in vars(module).items():
            if isinstance(fn, ctypes._CFuncPtr) and name[0].isupper():
                yield name, fn


def test_every_prototype_matches_its_documented_signature():
    seen = set()
    for name, fn in _prototypes():
        assert name in DOCUMENTED, f"{name} is declared but not checked here: add its documented signature"
        restype, nargs, errcheck = DOCUMENTED[name]
        assert fn.restype is restype, f"{name} returns {restype.__name__}, declared {fn.restype}"
        assert len(fn.argtypes) == nargs, f"{name} takes {nargs} parameters"
        assert getattr(fn, "errcheck", None) is errcheck, f"{name}: failure check should be {errcheck}"
        seen.add(name)
    missing = (set(DOCUMENTED) - seen - ({"IsWow64Process2"} if kernel32.IsWow64Process2 is None else set())
               - (PSS if kernel32.PssCaptureSnapshot is None else set()))
    assert not missing, f"documented but not declared: {missing}"


def test_structures_passed_to_windows_are_the_layout_tests_checked():
    for module, names in ((kernel32, ["MEMORY_BASIC_INFORMATION", "PROCESSENTRY32W", "SECURITY_ATTRIBUTES", "FILETIME",
                                      "BY_HANDLE_FILE_INFORMATION"]),
                          (advapi32, ["LUID", "LUID_AND_ATTRIBUTES", "TOKEN_PRIVILEGES", "SID_AND_ATTRIBUTES",
                                      "ACE_HEADER", "ACCESS_ALLOWED_ACE", "ACL_SIZE_INFORMATION"]),
                          (dbghelp, ["MINIDUMP_USER_STREAM", "MINIDUMP_USER_STREAM_INFORMATION",
                                     "MINIDUMP_CALLBACK_INPUT", "MINIDUMP_CALLBACK_INFORMATION"])):
        for name in names:
            assert getattr(module, name) is getattr(structs.NATIVE, name), name


def test_dbghelp_is_loaded_from_system32_by_full_path():
    system32 = ctypes.create_unicode_buffer(kernel32.MAX_PATH)
    ctypes.windll.kernel32.GetSystemDirectoryW(system32, kernel32.MAX_PATH)
    assert os.path.normcase(dbghelp.DLL_PATH) == os.path.normcase(os.path.join(system32.value, "dbghelp.dll"))


def test_process_table_has_this_process_by_exe_name():
    table = wrappers.process_table()
    assert table[os.getpid()].lower() == "python.exe"
    assert kernel32.GetCurrentProcessId() == os.getpid()


def test_exit_code_and_machines_of_this_live_process():
    handle = wrappers.open_process(os.getpid(), kernel32.PROCESS_QUERY_LIMITED_INFORMATION)
    try:
        assert wrappers.exit_code(handle) is None
        machine, native = wrappers.machines(handle)
        bits = 8 * ctypes.sizeof(ctypes.c_void_p)
        assert machine == (kernel32.IMAGE_FILE_MACHINE_AMD64 if bits == 64 else kernel32.IMAGE_FILE_MACHINE_I386)
        assert native in (kernel32.IMAGE_FILE_MACHINE_AMD64, kernel32.IMAGE_FILE_MACHINE_ARM64)
    finally:
        wrappers.close_handle(handle)


def test_memory_walk_sees_a_block_this_process_allocated():
    block = ctypes.create_string_buffer(4 << 20)
    address = ctypes.addressof(block)
    handle = wrappers.open_process(os.getpid(), kernel32.PROCESS_QUERY_INFORMATION)
    with wrappers.handle_closing(handle):
        regions = [(r.BaseAddress, r.RegionSize, r.Type) for r in wrappers.committed_regions(handle)]
    holding = [r for r in regions if r[0] <= address < r[0] + r[1]]
    assert holding, "no committed region holds the block: the walk misreads MEMORY_BASIC_INFORMATION"
    base, size, kind = holding[0]
    assert base + size >= address + (4 << 20) and kind == kernel32.MEM_PRIVATE


def test_open_process_of_no_process_is_process_not_found():
    with pytest.raises(ProcessNotFound) as info:
        wrappers.open_process(0x7FFFFFF0, kernel32.PROCESS_QUERY_LIMITED_INFORMATION)
    assert info.value.target == 0x7FFFFFF0


def test_open_process_refused_is_access_denied_with_the_pid():
    if UNDER_WINE:
        pytest.skip("real Windows only: Wine grants every process access to every other one")
    # The System process (pid 4) never grants PROCESS_VM_READ to a user-mode caller.
    with pytest.raises(AccessDenied) as info:
        wrappers.open_process(4, kernel32.PROCESS_VM_READ)
    assert info.value.pid == 4 and info.value.code == 5


def test_errcheck_raises_win32error_with_decoded_code():
    with pytest.raises(Win32Error) as info:
        kernel32.CloseHandle(0x12345678)
    assert info.value.winerror == 6 and "ERROR_INVALID_HANDLE" in str(info.value)


def test_hresult_decoding():
    assert split_hresult(0x8007012B) == (299, 0x8007012B)
    assert split_hresult(5) == (5, None)
    assert "HRESULT 0x8007012B" in describe(0x8007012B) and "ERROR_PARTIAL_COPY" in describe(0x8007012B)


def test_current_user_sid_is_a_user_sid():
    sid = wrappers.current_user_sid()
    assert sid.startswith("S-1-5-") and sid.count("-") >= 3 and sid not in ("S-1-5-18", "S-1-5-32-544")


def test_create_new_file_creates_an_empty_writable_file_and_truncates(tmp_path):
    path = str(tmp_path / "x.bin")
    handle = wrappers.create_new_file(path)
    try:
        written = wt.DWORD()
        assert ctypes.windll.kernel32.WriteFile(wt.HANDLE(handle), b"abcdef", 6, ctypes.byref(written), None)
        assert wrappers.file_size(handle) == 6
        wrappers.truncate(handle)
        assert wrappers.file_size(handle) == 0
    finally:
        wrappers.close_handle(handle)
    assert os.path.getsize(path) == 0


def test_create_new_file_in_missing_directory_is_invalid_path(tmp_path):
    with pytest.raises(InvalidDumpPath) as info:
        wrappers.create_new_file(str(tmp_path / "missing" / "x.bin"))
    assert info.value.path.endswith("x.bin")


def test_service_status_process_is_the_documented_nine_dwords():
    assert ctypes.sizeof(advapi32.SERVICE_STATUS_PROCESS) == 36
    assert advapi32.SERVICE_STATUS_PROCESS.dwProcessId.offset == 28


def test_the_service_control_manager_answers_for_a_service_that_does_not_exist():
    with pytest.raises(ProcessNotFound, match="no service is named"):
        wrappers.service_pid("NoSuchDumplibService")


def test_free_space_for_the_caller_is_within_the_volume(tmp_path):
    import shutil

    total, caller = wrappers.disk_space(str(tmp_path))
    usage = shutil.disk_usage(str(tmp_path))
    assert total > 0 and 0 < caller <= usage.free + (64 << 20)  # the volume's free space, less any quota


def test_the_service_control_manager_refuses_an_empty_name_as_no_such_service():
    with pytest.raises(ProcessNotFound) as info:
        wrappers.service_pid("")  # `svc:` alone: OpenServiceW says ERROR_INVALID_NAME
    assert info.value.target == "svc:"
