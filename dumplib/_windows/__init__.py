"""Windows backend: ctypes bindings of kernel32, advapi32 and dbghelp, and the backend above them.

Importing anything here on another OS fails (ctypes.WinDLL does not exist); `_switch` imports it
only on Windows.
"""
