"""Size- and count-based retention of the dumps dumplib wrote in one directory (never anything else)."""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

from .output import remove_quietly
from .sidecar import SUFFIX, read_sidecar


def dumps_in(directory: str) -> List[Tuple[str, str, int, str]]:
    """(finished_at, dump path, bytes on disk, sidecar path) of dumplib's dumps in *directory*, oldest first."""
    out = []
    for name in os.listdir(directory):
        if not name.endswith(SUFFIX):
            continue
        sidecar = os.path.join(directory, name)
        data = read_sidecar(sidecar)
        if data is None or data["dump"] != name[: -len(SUFFIX)]:
            continue
        dump = os.path.join(directory, data["dump"])
        if not os.path.isfile(dump):
            continue
        st = os.stat(dump)
        out.append((str(data.get("finished_at", "")), dump, getattr(st, "st_blocks", 0) * 512 or st.st_size, sidecar))
    return sorted(out)


def apply_retention(directory: str, *, keep: Optional[int], max_total: Optional[int], protect: str) -> List[str]:
    """Delete the oldest dumps (and their sidecars) until at most *keep* remain and they total at most *max_total* bytes.

    Only files with a dumplib sidecar are candidates; *protect* (the dump just written) is never removed.
    """
    entries = dumps_in(directory)
    removed: List[str] = []
    total = sum(e[2] for e in entries)
    count = len(entries)
    for _when, dump, size, sidecar in entries:
        over_count = keep is not None and count > keep
        over_size = max_total is not None and total > max_total
        if not (over_count or over_size):
            break
        if os.path.abspath(dump) == os.path.abspath(protect):
            continue
        remove_quietly(dump)
        remove_quietly(sidecar)
        removed.append(dump)
        total -= size
        count -= 1
    return removed
