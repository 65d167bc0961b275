"""The Linux platform: ELF cores of live processes (ptrace + /proc/PID/mem), watching, postmortem.

Layers, lowest first: proc/ (reads of /proc), ptrace/ (bindings, registers, the stopper), core/ (the
core writer), snapshot/ (clone-based snapshots); backend.py is the Platform and Session over them.
"""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")
