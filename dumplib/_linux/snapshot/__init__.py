"""Snapshots: the injected clone() and its reaping (clone, inject), seccomp's say over them, when one
may be taken (policy), and the helper process that holds it (remote)."""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")
