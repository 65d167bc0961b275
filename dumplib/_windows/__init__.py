"""The Windows platform, in layers: ctypes bindings (kernel32, advapi32, dbghelp, ntdll, debugapi,
jitapi, eventlog; structs and _common below them; wrappers over them), pure decisions that import on
every OS (policy, privilege, snapshot, structs), one module per job of a dump (estimate, access,
capture, writer, inflight, verify, exception_info), and backend.py, the thin Platform and Session
that wire those jobs; debugloop (watch, with handover: the writer's word that a held process may go
on) and aedebug (postmortem) sit beside the backend, and private judges a secret's file (its owner and
DACL, on the handle opened) for the host.

Importing a module that binds a DLL on another OS raises ImportError (a check python -O keeps);
`_switch` imports this package only on Windows.
"""
