"""ntdll.dll: only what tells Wine from Windows (Wine's dbghelp ignores most MINIDUMP_TYPE flags)."""
from __future__ import annotations

import ctypes

_dll = ctypes.WinDLL("ntdll")

#: Wine exports wine_get_version from its ntdll; Windows never does.
UNDER_WINE = hasattr(_dll, "wine_get_version")
