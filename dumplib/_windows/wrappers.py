"""Python-shaped wrappers over the raw prototypes: real names, real types, public errors."""
from __future__ import annotations

import sys

# Windows only (ctypes.WinDLL).
if sys.platform != "win32":  # survives python -O, unlike the assert below
    raise ImportError(f"{__name__} is Windows only")
assert sys.platform == "win32"  # tells type checkers on other platforms to skip this module

import contextlib
import ctypes
from ctypes import wintypes as wt
from typing import Dict, Iterator, NamedTuple, Optional, Tuple

from ..errors import AccessDenied, DumpFailed, InvalidDumpPath, ProcessNotFound
from . import advapi32, kernel32
from . import snapshot as snapshot_layouts
from .inflight import TEMPORARIES, is_temporary
from .policy import keeps_private_files
from .privilege import PrivilegeHold
from ._common import (
    DISK_FULL_ERRORS,
    ERROR_ACCESS_DENIED,
    ERROR_FILE_EXISTS,
    ERROR_INVALID_PARAMETER,
    ERROR_NO_MORE_FILES,
    ERROR_NOT_ALL_ASSIGNED,
    ERROR_SUCCESS,
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
        return int(kernel32.OpenProcess(access, False, pid))
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


#: 100-ns intervals between 1601-01-01 (FILETIME's epoch) and 1970-01-01.
_EPOCH_AS_FILETIME = 116444736000000000


def creation_time(process: int) -> float:
    """When *process* started, in seconds since the epoch (what psutil's create_time() reports)."""
    created, exited, kernel, user = (kernel32.FILETIME() for _ in range(4))
    kernel32.GetProcessTimes(process, ctypes.byref(created), ctypes.byref(exited), ctypes.byref(kernel),
                             ctypes.byref(user))
    ticks = (created.dwHighDateTime << 32) | created.dwLowDateTime
    return float(ticks - _EPOCH_AS_FILETIME) / 10_000_000


def machines(process: int) -> Tuple[int, int]:
    """(*process*'s machine, the OS's native machine) as IMAGE_FILE_MACHINE_* codes.

    IsWow64Process2 says UNKNOWN for a process not under WOW64 (it runs the native machine);
    where it is missing (before Windows 10 1511), IsWow64Process can only say "x86 on x64".
    """
    if kernel32.IsWow64Process2 is not None:
        process_machine, native = wt.USHORT(), wt.USHORT()
        kernel32.IsWow64Process2(process, ctypes.byref(process_machine), ctypes.byref(native))
        running: int = process_machine.value
        return (native.value if running == kernel32.IMAGE_FILE_MACHINE_UNKNOWN else running), native.value
    flag, mine = wt.BOOL(), wt.BOOL()
    kernel32.IsWow64Process(process, ctypes.byref(flag))
    kernel32.IsWow64Process(kernel32.GetCurrentProcess(), ctypes.byref(mine))
    os_is_64 = ctypes.sizeof(ctypes.c_void_p) == 8 or bool(mine.value)
    os_machine = kernel32.IMAGE_FILE_MACHINE_AMD64 if os_is_64 else kernel32.IMAGE_FILE_MACHINE_I386
    return (kernel32.IMAGE_FILE_MACHINE_I386 if flag.value else os_machine), os_machine


def _token(access: int) -> int:
    token = wt.HANDLE()
    advapi32.OpenProcessToken(kernel32.GetCurrentProcess(), access, ctypes.byref(token))
    return token.value or 0


def _set_luid(luid: "advapi32.LUID", name: str) -> None:
    advapi32.LookupPrivilegeValueW(None, name, ctypes.byref(luid))


def privilege_attributes(name: str) -> Optional[int]:
    """The SE_PRIVILEGE_* attributes of *name* in this process's token; None when it is not held."""
    wanted = advapi32.LUID()
    _set_luid(wanted, name)
    with handle_closing(_token(advapi32.TOKEN_QUERY)) as token:
        needed = wt.DWORD()
        advapi32.GetTokenInformation(token, advapi32.TokenPrivileges, None, 0, ctypes.byref(needed))
        buf = ctypes.create_string_buffer(max(needed.value, 4))
        if not advapi32.GetTokenInformation(token, advapi32.TokenPrivileges, buf, needed, ctypes.byref(needed)):
            raise Win32Error("GetTokenInformation", ctypes.get_last_error())
    count = ctypes.c_uint32.from_buffer(buf).value
    for entry in (advapi32.LUID_AND_ATTRIBUTES * count).from_buffer(buf, 4):
        if (entry.Luid.LowPart, entry.Luid.HighPart) == (wanted.LowPart, wanted.HighPart):
            return int(entry.Attributes)
    return None


def set_privilege(name: str, enabled: bool) -> None:
    """Enable or disable *name* in this process's token (it must hold it)."""
    with handle_closing(_token(advapi32.TOKEN_ADJUST_PRIVILEGES | advapi32.TOKEN_QUERY)) as token:
        privs = advapi32.TOKEN_PRIVILEGES()
        privs.PrivilegeCount = 1
        _set_luid(privs.Privileges[0].Luid, name)
        privs.Privileges[0].Attributes = advapi32.SE_PRIVILEGE_ENABLED if enabled else 0
        advapi32.AdjustTokenPrivileges(token, False, ctypes.byref(privs), 0, None, None)


class TokenChange(NamedTuple):
    """What enable_privilege changed: the token handle kept open for the restore, and its previous state."""

    token: int
    #: TOKEN_PRIVILEGES as AdjustTokenPrivileges' PreviousState returned it (empty: nothing changed).
    previous: ctypes.Structure


def enable_privilege(name: str) -> Tuple[bool, Optional[TokenChange]]:
    """Enable *name* in this process's token: (whether the token holds it, what restore_privilege needs).

    The token handle is kept for the restore, so putting the privilege back never depends on
    opening the token again. Win32Error when the token cannot be opened or adjusted (nothing changed).
    """
    token = _token(advapi32.TOKEN_ADJUST_PRIVILEGES | advapi32.TOKEN_QUERY)
    try:
        wanted = advapi32.TOKEN_PRIVILEGES()
        wanted.PrivilegeCount = 1
        _set_luid(wanted.Privileges[0].Luid, name)
        wanted.Privileges[0].Attributes = advapi32.SE_PRIVILEGE_ENABLED
        previous = advapi32.TOKEN_PRIVILEGES()
        size = wt.DWORD()
        ctypes.set_last_error(0)
        advapi32.AdjustTokenPrivileges(token, False, ctypes.byref(wanted), ctypes.sizeof(previous),
                                       ctypes.byref(previous), ctypes.byref(size))
        held = ctypes.get_last_error() != ERROR_NOT_ALL_ASSIGNED
    except BaseException:
        close_handle(token)
        raise
    if not held:
        close_handle(token)  # nothing changed, so nothing to restore: the hold never calls restore for it
        return False, None
    return held, TokenChange(token, previous)


def restore_privilege(state: Optional[TokenChange]) -> None:
    """Put back what enable_privilege changed (PreviousState lists nothing when it was on already)."""
    if state is None:
        return  # the token did not hold it: enable_privilege changed nothing and closed its handle
    token, previous = state
    try:
        if previous.PrivilegeCount:
            advapi32.AdjustTokenPrivileges(token, False, ctypes.byref(previous), 0, None, None)
    finally:
        close_handle(token)


def _enable_debug() -> Tuple[bool, Optional[TokenChange]]:
    try:
        return enable_privilege(SE_DEBUG)
    except Win32Error:
        return False, None  # no token access: every call runs as the token already is


def _restore_debug(state: Optional[TokenChange]) -> None:
    try:
        restore_privilege(state)
    except Win32Error:
        pass  # on a cleanup path; the token handle is closed either way


SE_DEBUG = "SeDebugPrivilege"
#: SeDebugPrivilege, held on for the whole of each dump's open, write, snapshot capture and
#: debugger attach (MiniDumpWriteDump needs THREAD_ALL_ACCESS to every thread of the target),
#: shared by every thread of this process, and put back by the last holder.
DEBUG_PRIVILEGE = PrivilegeHold(_enable_debug, _restore_debug)


@contextlib.contextmanager
def privilege_enabled(name: str) -> Iterator[bool]:
    """Enable *name* for the body only, then put back what AdjustTokenPrivileges' PreviousState says.

    Yields whether the token holds it (False: not held, e.g. not elevated; nothing changed). A
    library caller's token is left as it was, whatever the body raises. For SeDebugPrivilege,
    use DEBUG_PRIVILEGE.held(), which concurrent dumps share.
    """
    held, state = enable_privilege(name)
    try:
        yield held
    finally:
        restore_privilege(state)


def current_user_sid() -> str:
    """The calling user's SID as a string (``S-1-5-21-...``)."""
    token = wt.HANDLE()
    advapi32.OpenProcessToken(kernel32.GetCurrentProcess(), advapi32.TOKEN_QUERY, ctypes.byref(token))
    with handle_closing(token.value or 0):
        needed = wt.DWORD()
        advapi32.GetTokenInformation(token, advapi32.TokenUser, None, 0, ctypes.byref(needed))
        buf = ctypes.create_string_buffer(needed.value)
        if not advapi32.GetTokenInformation(token, advapi32.TokenUser, buf, needed, ctypes.byref(needed)):
            raise Win32Error("GetTokenInformation", ctypes.get_last_error())
        user = advapi32.SID_AND_ATTRIBUTES.from_buffer(buf)  # its Sid points into buf
        text = wt.LPWSTR()
        advapi32.ConvertSidToStringSidW(user.Sid, ctypes.byref(text))
        try:
            return text.value or ""
        finally:
            kernel32.LocalFree(ctypes.cast(text, ctypes.c_void_p))


def private_sddl(user: str, owner: bool = True) -> str:
    """The security descriptor of every file dumplib creates, as SDDL: owned by *user* (a SID string),
    a protected DACL (nothing inherited) granting *user*, SYSTEM and Administrators, the three a
    user's profile folder grants (private.py's check trusts no one else).

    The owner is named: an elevated administrator's new files are otherwise owned by the
    Administrators group (Windows' default owner for that token), and a key file must be the user's own."""
    return (f"O:{user}" if owner else "") + f"D:P(A;;FA;;;{user})(A;;FA;;;SY)(A;;FA;;;BA)"


#: CreateFileW's error when the owner named in its security descriptor cannot be assigned there (an SMB
#: server checks it against its own token, where a client-local account's SID does not exist).
ERROR_INVALID_OWNER = 1307


@contextlib.contextmanager
def owner_only_security(owner: bool = True) -> Iterator[kernel32.SECURITY_ATTRIBUTES]:
    """SECURITY_ATTRIBUTES of private_sddl: this user's own, readable by them, SYSTEM and Administrators only.

    A dump holds everything in the target's memory (passwords, keys); inheriting the directory's
    ACL could let any user read it.
    """
    sddl = private_sddl(current_user_sid(), owner)
    descriptor = ctypes.c_void_p()
    advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW(
        sddl, advapi32.SDDL_REVISION_1, ctypes.byref(descriptor), None
    )
    try:
        attrs = kernel32.SECURITY_ATTRIBUTES()
        attrs.nLength = ctypes.sizeof(attrs)
        attrs.lpSecurityDescriptor = descriptor.value or 0
        attrs.bInheritHandle = False
        yield attrs
    finally:
        kernel32.LocalFree(descriptor)


def create_new_file(path: str) -> int:
    """Create *path* exclusively (CREATE_NEW) for writing, this user's own (private_sddl). Where the owner
    cannot be named (ERROR_INVALID_OWNER: a share whose server does not know this account), created again
    with the same private DACL and the default owner: a retention key made so is refused by its own
    check (private.py: not the user's), a dump stays readable by the same three only."""
    try:
        try:
            handle = _create_private(path, owner=True)
        except Win32Error as exc:
            if exc.winerror != ERROR_INVALID_OWNER:
                raise
            handle = _create_private(path, owner=False)
        if is_temporary(path):
            TEMPORARIES.add(path)  # a console closed before it is placed waits for its removal (inflight.py)
        return handle
    except Win32Error as exc:
        if exc.winerror == ERROR_FILE_EXISTS:
            raise
        if exc.winerror in DISK_FULL_ERRORS:
            raise DumpFailed(f"cannot create {path}: {exc.message}; nothing was dumped. Free space (or quota)"
                             " or choose another directory", winerror=exc.winerror, hresult=exc.hresult,
                             reason="disk-full") from None
        raise InvalidDumpPath(f"cannot create {path}: {exc.message}", path=path) from None


def _create_private(path: str, owner: bool) -> int:
    with owner_only_security(owner) as attrs:
        return int(kernel32.CreateFileW(
            path,
            kernel32.GENERIC_READ | kernel32.GENERIC_WRITE,
            kernel32.FILE_SHARE_READ,
            ctypes.addressof(attrs),
            kernel32.CREATE_NEW,
            kernel32.FILE_ATTRIBUTE_NORMAL,
            None,
        ))


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


def disk_space(directory: str) -> Tuple[int, int]:
    """(size, bytes this user may still write) of the volume holding *directory*, quotas included."""
    caller, total, free = wt.ULARGE_INTEGER(), wt.ULARGE_INTEGER(), wt.ULARGE_INTEGER()
    kernel32.GetDiskFreeSpaceExW(directory, ctypes.byref(caller), ctypes.byref(total), ctypes.byref(free))
    return int(total.value), int(caller.value)


def truncate(handle: int) -> None:
    """Empty the file so a retried MiniDumpWriteDump starts from byte 0."""
    kernel32.SetFilePointerEx(handle, 0, None, kernel32.FILE_BEGIN)
    kernel32.SetEndOfFile(handle)


def volume_keeps_private_files(directory: str) -> bool:
    """Whether *directory* is on a fixed local volume whose file system stores ACLs (NTFS, ReFS).

    A removable stick or a FAT/exFAT volume drops the owner-only DACL (and FAT holds no file over
    4 GiB): a raw dump never waits there.
    """
    root = ctypes.create_unicode_buffer(kernel32.MAX_PATH + 1)
    try:
        kernel32.GetVolumePathNameW(directory, root, len(root))
    except Win32Error:
        return False
    drive_type = kernel32.GetDriveTypeW(root.value)
    flags = wt.DWORD()
    try:
        kernel32.GetVolumeInformationW(root.value, None, 0, None, None, ctypes.byref(flags), None, 0)
    except Win32Error:
        return False
    return keeps_private_files(drive_type, flags.value)


def file_security(path: str) -> str:
    """*path*'s owner and DACL as SDDL (``O:...D:P(A;;FA;;;S-1-5-...)``), read back from the file system."""
    what = advapi32.OWNER_SECURITY_INFORMATION | advapi32.DACL_SECURITY_INFORMATION
    descriptor = ctypes.c_void_p()
    code = advapi32.GetNamedSecurityInfoW(path, advapi32.SE_FILE_OBJECT, what, None, None, None, None,
                                          ctypes.byref(descriptor))
    if code != ERROR_SUCCESS:
        raise Win32Error("GetNamedSecurityInfoW", code)
    try:
        text = wt.LPWSTR()
        advapi32.ConvertSecurityDescriptorToStringSecurityDescriptorW(descriptor, advapi32.SDDL_REVISION_1, what,
                                                                      ctypes.byref(text), None)
        try:
            return text.value or ""
        finally:
            kernel32.LocalFree(ctypes.cast(text, ctypes.c_void_p))
    finally:
        kernel32.LocalFree(descriptor)


def private_bytes(process: int) -> int:
    """*process*'s commit charge (its private committed memory), in bytes.

    PrivateUsage where the answer's cb says the _EX part was filled; else PagefileUsage, which
    the documentation defines as the same commit charge (Wine fills only the shorter structure)."""
    counters = kernel32.PROCESS_MEMORY_COUNTERS_EX()
    size = ctypes.sizeof(counters)
    counters.cb = size
    kernel32.K32GetProcessMemoryInfo(process, ctypes.byref(counters), size)
    return int(counters.PrivateUsage if counters.cb >= size else counters.PagefileUsage)


def commit_room() -> Tuple[int, int]:
    """(commit this process may still charge, the commit limit), from GlobalMemoryStatusEx."""
    status = kernel32.MEMORYSTATUSEX()
    status.dwLength = ctypes.sizeof(status)
    kernel32.GlobalMemoryStatusEx(ctypes.byref(status))
    return int(status.ullAvailPageFile), int(status.ullTotalPageFile)


def snapshot_clone_cost(snapshot: int) -> Optional[int]:
    """The private commit of *snapshot*'s VA clone process: what the clone costs the system while it
    lives. None where Windows does not say (the clone's handle is the snapshot's: not closed here)."""
    info = kernel32.PSS_VA_CLONE_INFORMATION()
    try:
        kernel32.PssQuerySnapshot(snapshot, snapshot_layouts.PSS_QUERY_VA_CLONE_INFORMATION, ctypes.byref(info),
                                  ctypes.sizeof(info))
        if not info.VaCloneHandle:
            return None
        return private_bytes(info.VaCloneHandle)
    except Win32Error:
        return None


def _close_service(handle: int) -> None:
    try:
        advapi32.CloseServiceHandle(handle)
    except Win32Error:
        pass  # on a cleanup path


def service_pid(name: str) -> int:
    """The process id of the running Windows service *name* (its key name, as `sc query` lists it),
    from the service control manager. ProcessNotFound when there is no such service or it is not
    running; AccessDenied when the SCM refuses this user."""
    label = f"svc:{name}"
    try:
        manager = advapi32.OpenSCManagerW(None, None, advapi32.SC_MANAGER_CONNECT)
    except Win32Error as exc:
        raise AccessDenied(f"the service control manager refused this user ({exc.message})", pid=0,
                           code=exc.winerror) from None
    try:
        try:
            service = advapi32.OpenServiceW(manager, name, advapi32.SERVICE_QUERY_STATUS)
        except Win32Error as exc:
            if exc.winerror in (advapi32.ERROR_SERVICE_DOES_NOT_EXIST, advapi32.ERROR_INVALID_NAME):
                raise ProcessNotFound(label, f"no service is named {name!r}; `sc query state= all` lists their"
                                             " key names") from None
            if exc.winerror == ERROR_ACCESS_DENIED:
                raise AccessDenied(f"service {name!r} may not be queried by this user ({exc.message})", pid=0,
                                   code=exc.winerror) from None
            raise
        try:
            status = advapi32.SERVICE_STATUS_PROCESS()
            needed = wt.DWORD()
            advapi32.QueryServiceStatusEx(service, advapi32.SC_STATUS_PROCESS_INFO, ctypes.byref(status),
                                          ctypes.sizeof(status), ctypes.byref(needed))
        finally:
            _close_service(service)
    finally:
        _close_service(manager)
    if status.dwCurrentState == advapi32.SERVICE_STOPPED or not status.dwProcessId:
        raise ProcessNotFound(label, f"service {name!r} is not running (state {status.dwCurrentState}); start it"
                                     f" (`sc start {name}`) or watch for it")
    return int(status.dwProcessId)
