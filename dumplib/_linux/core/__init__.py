"""The core writer: which memory a core holds (selection), probing and copying it (memory), its notes,
and the streamed core of the postmortem handler (stream)."""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")
