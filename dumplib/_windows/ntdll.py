"""ntdll.dll: only what tells Wine from Windows (Wine's dbghelp ignores most MINIDUMP_TYPE flags)."""
from __future__ import annotations

import sys

# Windows only (ctypes.WinDLL); also tells type checkers on other platforms to skip this module.
assert sys.platform == "win32"

import ctypes

_dll = ctypes.WinDLL("ntdll")

#: Wine exports wine_get_version from its ntdll; Windows never does.
UNDER_WINE = hasattr(_dll, "wine_get_version")
