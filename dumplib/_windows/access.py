"""What each operation asks of the target, and nothing more (EDR products flag VM_READ on lsass),
and the dump's own open, made with SeDebugPrivilege held."""
from __future__ import annotations

import sys

if sys.platform != "win32":  # survives python -O, unlike the assert below
    raise ImportError(f"{__name__} is Windows only")
assert sys.platform == "win32"  # tells type checkers on other platforms to skip this module

from ..errors import AccessDenied
from . import kernel32, wrappers
from ._common import ERROR_ACCESS_DENIED

#: The VirtualQueryEx walk behind estimates, --fit and `dumplib ps`'s full-dump column.
WALK_ACCESS = kernel32.PROCESS_QUERY_INFORMATION
#: MiniDumpWriteDump: reading memory, and duplicating handles for the handle-data stream.
DUMP_ACCESS = kernel32.PROCESS_QUERY_INFORMATION | kernel32.PROCESS_VM_READ | kernel32.PROCESS_DUP_HANDLE


def open_for_dump(pid: int, access: int = DUMP_ACCESS) -> int:
    """OpenProcess for a dump, with SeDebugPrivilege held on (the caller's hold goes on past it, to
    the end of the write); AccessDenied saying whether the privilege was there to help."""
    with wrappers.DEBUG_PRIVILEGE.held() as held:
        try:
            return wrappers.open_process(pid, access)
        except AccessDenied:
            pass
    if held:
        advice = (
            "SeDebugPrivilege is held and was enabled, so the target is protected (a PPL process such as"
            " lsass, or anti-malware) and cannot be dumped; dumplib never bypasses that"
        )
    else:
        advice = (
            "this user does not hold SeDebugPrivilege (not elevated, or filtered by UAC): run dumplib"
            " as the process's owner or from an elevated (Run as administrator) prompt"
        )
    raise AccessDenied(
        f"access to process {pid} was denied; {advice}", pid=pid, code=ERROR_ACCESS_DENIED, debug_privilege=held
    )
