"""psutil, imported once for all of dumplib, leaving this process's token as it found it.

psutil's Windows module enables SeDebugPrivilege for the whole process when it is imported and
never disables it: a library caller, and every child it starts, would be left holding the very
privilege EDR products watch for. dumplib enables it only around the dump's own OpenProcess.
"""
from __future__ import annotations

import sys

if sys.platform == "win32" and "psutil" not in sys.modules:
    from ._windows.wrappers import privilege_attributes, set_privilege

    _before = privilege_attributes("SeDebugPrivilege")
    import psutil

    if _before is not None and privilege_attributes("SeDebugPrivilege") != _before:
        set_privilege("SeDebugPrivilege", bool(_before & 2))  # SE_PRIVILEGE_ENABLED
else:
    import psutil

__all__ = ["psutil"]
