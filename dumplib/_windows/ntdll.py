"""ntdll.dll: only what tells Wine from Windows (Wine's dbghelp ignores most MINIDUMP_TYPE flags)."""
from __future__ import annotations

import sys

# Windows only (ctypes.WinDLL).
if sys.platform != "win32":  # survives python -O, unlike the assert below
    raise ImportError(f"{__name__} is Windows only")
assert sys.platform == "win32"  # tells type checkers on other platforms to skip this module

import ctypes

_dll = ctypes.WinDLL("ntdll")

#: Wine exports wine_get_version from its ntdll; Windows never does.
UNDER_WINE = hasattr(_dll, "wine_get_version")
