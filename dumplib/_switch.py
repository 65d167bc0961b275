"""The one place a Platform is chosen: above the interface (_platform.py) and both platform folders.

Only the public entry points (api, targets, watching, postmortem) call current(); they pass the
Platform, its Host or a Session down to what lies below them. Imported lazily by platform, so
`import dumplib` stays cheap everywhere.
"""
from __future__ import annotations

import sys
import threading

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Optional

from ._platform import Platform
from .errors import UnsupportedPlatform

_cached: Optional[Platform] = None
_lock = threading.Lock()


def current() -> Platform:
    """This OS's Platform, made once per process."""
    global _cached
    if _cached is None:
        with _lock:
            if _cached is None:
                _cached = _load()
    return _cached


def _load() -> Platform:
    if sys.platform == "win32":
        from ._windows.backend import WindowsPlatform

        return WindowsPlatform()
    if sys.platform.startswith("linux"):
        from ._linux.backend import LinuxPlatform, supported_machine

        if supported_machine():
            return LinuxPlatform()
        import platform

        raise UnsupportedPlatform(f"linux-{platform.machine()}")
    raise UnsupportedPlatform(sys.platform)
