"""psutil, imported once for all of dumplib by the platform's own rules.

On Windows psutil's import enables SeDebugPrivilege for the whole process; the import goes through
_windows/host.import_psutil, which puts the token back as it was, so dumplib holds the privilege
only while a dump, capture or attach needs it. Elsewhere it is a plain import. Imported only where
psutil is needed, never on the one-shot command's way to a dump.
"""
from __future__ import annotations

import sys
import typing

if typing.TYPE_CHECKING or sys.platform != "win32":
    import psutil
else:
    from ._windows.host import import_psutil

    psutil = import_psutil()

__all__ = ["psutil"]
