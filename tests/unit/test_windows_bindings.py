"""Every Windows prototype exercised for real. Runs inside Windows python.exe (under Wine in CI,
see tests/e2e_wine/test_wine_dumps.py::test_unit_tests_pass_inside_windows_python)."""
import ctypes
import os
import sys

import pytest

if sys.platform != "win32":
    pytest.skip("Windows bindings: run inside Windows python.exe by the Wine tests", allow_module_level=True)

from dumplib import AccessDenied, ProcessNotFound  # noqa: E402
from dumplib._windows import advapi32, dbghelp, kernel32, wrappers  # noqa: E402
from dumplib._windows._common import Win32Error, describe, split_hresult  # noqa: E402

BINDINGS = (kernel32, advapi32, dbghelp)


def test_every_prototype_declares_argtypes_and_restype():
    seen = 0
    for module in BINDINGS:
        for name, fn in vars(module).items():
            if isinstance(fn, ctypes._CFuncPtr) and not name.startswith("_") and name[0].isupper():
                assert fn.argtypes is not None, f"{module.__name__}.{name} lacks argtypes"
                assert fn.restype is not None, f"{module.__name__}.{name} lacks restype"
                seen += 1
    assert seen >= 20


def test_dbghelp_is_loaded_from_system32_by_full_path():
    assert os.path.isabs(dbghelp.DLL_PATH)
    assert dbghelp.DLL_PATH.lower().endswith(os.path.join("system32", "dbghelp.dll"))


def test_minidump_structures_have_dbghelp_h_layout():
    assert ctypes.sizeof(dbghelp.MINIDUMP_USER_STREAM) == 16
    assert dbghelp.MINIDUMP_USER_STREAM_INFORMATION.UserStreamArray.offset == 4  # pshpack4
    assert ctypes.sizeof(dbghelp.MINIDUMP_CALLBACK_INFORMATION) == 16
    assert dbghelp.MINIDUMP_CALLBACK_INPUT.CallbackType.offset == 12


def test_process_table_has_this_process_by_exe_name():
    table = wrappers.process_table()
    assert table[os.getpid()].lower() == "python.exe"
    assert kernel32.GetCurrentProcessId() == os.getpid()


def test_open_process_and_exit_code_of_a_live_process():
    handle = wrappers.open_process(os.getpid(), kernel32.PROCESS_QUERY_LIMITED_INFORMATION)
    try:
        assert wrappers.exit_code(handle) is None
        assert wrappers.is_wow64(handle) is (ctypes.sizeof(ctypes.c_void_p) == 4)
    finally:
        wrappers.close_handle(handle)


def test_open_process_errors_are_typed():
    with pytest.raises(ProcessNotFound):
        wrappers.open_process(0x7FFFFFF0, kernel32.PROCESS_QUERY_LIMITED_INFORMATION)


def test_errcheck_raises_win32error_with_decoded_code():
    with pytest.raises(Win32Error) as info:
        kernel32.CloseHandle(0x12345678)
    assert info.value.winerror == 6 and "ERROR_INVALID_HANDLE" in str(info.value)


def test_hresult_decoding():
    assert split_hresult(0x8007012B) == (299, 0x8007012B)
    assert split_hresult(5) == (5, None)
    assert "HRESULT 0x8007012B" in describe(0x8007012B) and "ERROR_PARTIAL_COPY" in describe(0x8007012B)


def test_privilege_and_sid():
    assert isinstance(wrappers.enable_privilege("SeDebugPrivilege"), bool)
    assert wrappers.current_user_sid().startswith("S-1-")


def test_create_new_file_is_exclusive_and_truncatable(tmp_path):
    path = str(tmp_path / "x.bin")
    handle = wrappers.create_new_file(path)
    try:
        assert wrappers.file_size(handle) == 0
        with pytest.raises(Win32Error):
            wrappers.create_new_file(path)  # CREATE_NEW: never opens an existing file
        wrappers.truncate(handle)
        kernel32.FlushFileBuffers(handle)
    finally:
        wrappers.close_handle(handle)
    assert os.path.exists(path)


def test_create_new_file_in_missing_directory_is_invalid_path(tmp_path):
    from dumplib import InvalidDumpPath

    with pytest.raises(InvalidDumpPath):
        wrappers.create_new_file(str(tmp_path / "missing" / "x.bin"))


def test_access_denied_is_a_public_error_type():
    assert issubclass(AccessDenied, Exception)
