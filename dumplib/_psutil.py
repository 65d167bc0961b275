"""psutil, imported once for all of dumplib by the platform's own rules (see Files.import_psutil).

On Windows psutil's import enables SeDebugPrivilege for the whole process; the Windows backend
puts the token back as it was, so dumplib holds it only while a dump, capture or attach needs it.
"""
from __future__ import annotations

import typing

if typing.TYPE_CHECKING:
    import psutil
else:
    from ._backend import get_backend

    psutil = get_backend().files().import_psutil()

__all__ = ["psutil"]
