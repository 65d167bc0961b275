"""The /proc layer: another process's stat, status, maps and files read once with named fields, and
what a failed call on it means (errors.py)."""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")
