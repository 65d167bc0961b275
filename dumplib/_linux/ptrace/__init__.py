"""The ptrace layer: libc bindings and numbers, registers with named sizes, the mailbox through which
other threads ask the one thread that owns an attachment, and the stopper built on them."""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")
