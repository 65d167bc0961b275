"""Python-shaped wrappers over the raw prototypes: real names, real types, public errors."""
from __future__ import annotations

import contextlib
import ctypes
from ctypes import wintypes as wt
from typing import Dict, Iterator, Optional

from ..errors import AccessDenied, InvalidDumpPath, ProcessNotFound
from . import advapi32, kernel32
from ._common import (
    ERROR_ACCESS_DENIED,
    ERROR_FILE_EXISTS,
    ERROR_INVALID_PARAMETER,
    ERROR_NO_MORE_FILES,
    ERROR_NOT_ALL_ASSIGNED,
    Win32Error,
)


def close_handle(handle: Optional[int]) -> None:
    if handle:
        try:
            kernel32.CloseHandle(handle)
        except Win32Error:
            pass  # closing on a cleanup path must not mask the real error


@contextlib.contextmanager
def handle_closing(handle: int) -> Iterator[int]:
    try:
        yield handle
    finally:
        close_handle(handle)


def process_table() -> Dict[int, str]:
    """pid -> exe name from one Toolhelp snapshot (works where psutil's name() does not, e.g. Wine)."""
    snap = kernel32.CreateToolhelp32Snapshot(kernel32.TH32CS_SNAPPROCESS, 0)
    table: Dict[int, str] = {}
    with handle_closing(snap):
        entry = kernel32.PROCESSENTRY32W()
        entry.dwSize = ctypes.sizeof(entry)
        ok = kernel32.Process32FirstW(snap, ctypes.byref(entry))
        while ok:
            table[entry.th32ProcessID] = entry.szExeFile
            ok = kernel32.Process32NextW(snap, ctypes.byref(entry))
        code = ctypes.get_last_error()
        if code not in (0, ERROR_NO_MORE_FILES):
            raise Win32Error("Process32NextW", code)
    return table


def open_process(pid: int, access: int) -> int:
    """A handle to *pid* with exactly *access*; ProcessNotFound / AccessDenied with the pid on failure."""
    try:
        return kernel32.OpenProcess(access, False, pid)
    except Win32Error as exc:
        if exc.winerror == ERROR_INVALID_PARAMETER:
            raise ProcessNotFound(pid, f"no process has pid {pid} (it may have exited)") from None
        if exc.winerror == ERROR_ACCESS_DENIED:
            raise AccessDenied(
                f"access to process {pid} was denied (OpenProcess, access 0x{access:X})",
                pid=pid,
                code=exc.winerror,
            ) from None
        raise


def exit_code(process: int) -> Optional[int]:
    """The process's exit code, or None while it still runs."""
    code = wt.DWORD()
    kernel32.GetExitCodeProcess(process, ctypes.byref(code))
    return None if code.value == kernel32.STILL_ACTIVE else code.value


def is_wow64(process: int) -> bool:
    """True when *process* is a 32-bit process on a 64-bit Windows."""
    if kernel32.IsWow64Process2 is not None:
        machine, native = wt.USHORT(), wt.USHORT()
        kernel32.IsWow64Process2(process, ctypes.byref(machine), ctypes.byref(native))
        return machine.value != kernel32.IMAGE_FILE_MACHINE_UNKNOWN
    flag = wt.BOOL()
    kernel32.IsWow64Process(process, ctypes.byref(flag))
    return bool(flag.value)


def enable_privilege(name: str) -> bool:
    """Enable *name* in this process's token; False when the token does not hold it (UAC-filtered)."""
    token = wt.HANDLE()
    advapi32.OpenProcessToken(
        kernel32.GetCurrentProcess(), advapi32.TOKEN_ADJUST_PRIVILEGES | advapi32.TOKEN_QUERY, ctypes.byref(token)
    )
    with handle_closing(token.value):
        privs = advapi32.TOKEN_PRIVILEGES()
        privs.PrivilegeCount = 1
        advapi32.LookupPrivilegeValueW(None, name, ctypes.byref(privs.Privileges[0].Luid))
        privs.Privileges[0].Attributes = advapi32.SE_PRIVILEGE_ENABLED
        ctypes.set_last_error(0)
        advapi32.AdjustTokenPrivileges(token, False, ctypes.byref(privs), 0, None, None)
        return ctypes.get_last_error() != ERROR_NOT_ALL_ASSIGNED


def current_user_sid() -> str:
    """The calling user's SID as a string (``S-1-5-21-...``)."""
    token = wt.HANDLE()
    advapi32.OpenProcessToken(kernel32.GetCurrentProcess(), advapi32.TOKEN_QUERY, ctypes.byref(token))
    with handle_closing(token.value):
        needed = wt.DWORD()
        advapi32.GetTokenInformation(token, advapi32.TokenUser, None, 0, ctypes.byref(needed))
        buf = ctypes.create_string_buffer(needed.value)
        if not advapi32.GetTokenInformation(token, advapi32.TokenUser, buf, needed, ctypes.byref(needed)):
            raise Win32Error("GetTokenInformation", ctypes.get_last_error())
        user = advapi32.SID_AND_ATTRIBUTES.from_buffer(buf)
        text = wt.LPWSTR()
        advapi32.ConvertSidToStringSidW(user.Sid, ctypes.byref(text))
        try:
            return text.value or ""
        finally:
            kernel32.LocalFree(ctypes.cast(text, ctypes.c_void_p))


@contextlib.contextmanager
def owner_only_security() -> Iterator[kernel32.SECURITY_ATTRIBUTES]:
    """SECURITY_ATTRIBUTES whose protected DACL lets only this user and Administrators in.

    A dump holds everything in the target's memory (passwords, keys); inheriting the directory's
    ACL could let any user read it.
    """
    sddl = f"D:P(A;;FA;;;{current_user_sid()})(A;;FA;;;BA)"
    descriptor = ctypes.c_void_p()
    advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW(
        sddl, advapi32.SDDL_REVISION_1, ctypes.byref(descriptor), None
    )
    try:
        attrs = kernel32.SECURITY_ATTRIBUTES()
        attrs.nLength = ctypes.sizeof(attrs)
        attrs.lpSecurityDescriptor = descriptor
        attrs.bInheritHandle = False
        yield attrs
    finally:
        kernel32.LocalFree(descriptor)


def create_new_file(path: str) -> int:
    """Create *path* exclusively (CREATE_NEW) for writing, readable only by its owner and Administrators."""
    with owner_only_security() as attrs:
        try:
            return kernel32.CreateFileW(
                path,
                kernel32.GENERIC_READ | kernel32.GENERIC_WRITE,
                kernel32.FILE_SHARE_READ,
                ctypes.addressof(attrs),
                kernel32.CREATE_NEW,
                kernel32.FILE_ATTRIBUTE_NORMAL,
                None,
            )
        except Win32Error as exc:
            if exc.winerror == ERROR_FILE_EXISTS:
                raise
            raise InvalidDumpPath(f"cannot create {path}: {exc.message}", path=path) from None


def committed_regions(process: int) -> Iterator[kernel32.MEMORY_BASIC_INFORMATION]:
    """Every committed region of *process*, by VirtualQueryEx, lowest address first."""
    info = kernel32.MEMORY_BASIC_INFORMATION()
    address = 0
    while kernel32.VirtualQueryEx(process, address, ctypes.byref(info), ctypes.sizeof(info)):
        if info.State == kernel32.MEM_COMMIT:
            yield info
        address = (info.BaseAddress or 0) + info.RegionSize
        if info.RegionSize == 0:
            break


def file_size(handle: int) -> int:
    size = wt.LARGE_INTEGER()
    kernel32.GetFileSizeEx(handle, ctypes.byref(size))
    return size.value


def truncate(handle: int) -> None:
    """Empty the file so a retried MiniDumpWriteDump starts from byte 0."""
    kernel32.SetFilePointerEx(handle, 0, None, kernel32.FILE_BEGIN)
    kernel32.SetEndOfFile(handle)
