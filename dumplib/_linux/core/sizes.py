"""The size from which a core's output is prepared before the target is stopped (mapped: mapped.py;
staged in memory: staged.py): in a module of its own, so that the copy (memory.py), which every dump
imports, knows it without importing those two, which a smaller dump (the one-shot command's) never
needs, and they know it without importing the copy."""
from __future__ import annotations

import sys

if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

#: Outputs smaller than this are written during the stop: mapping or staging and populating one costs
#: more than it saves.
MAP_AT_LEAST = 64 << 20
