"""The memory left under a process's cgroup limits: read for a snapshot (a clone's worst case must fit)
and for the core writer's mapped output (the estimate held in page cache before the stop must fit).

A module of its own under proc/, below both users, so neither imports the other (tests/unit/test_layers.py).
"""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import os

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Optional, Sequence, Tuple


def cgroup_room(pid: int) -> Optional[Tuple[int, str]]:
    """(bytes left, cgroup) under the tightest memory limit of the target's cgroup and its ancestors:
    cgroup v2 (memory.max, memory.high) and v1's memory controller (memory.limit_in_bytes), wherever
    they are mounted (hybrid systems have both). None when no limit applies."""
    try:
        with open(f"/proc/{pid}/cgroup", "rb") as f:
            lines = f.read().decode("utf-8", "surrogateescape").splitlines()
    except OSError:
        return None
    v2_mount, v1_memory_mount = _cgroup_mounts()
    best: Optional[Tuple[int, str]] = None
    for line in lines:
        hier, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hier == "0" and controllers == "" and v2_mount:
            found = _tightest(v2_mount, path, "memory.current", ("memory.max", "memory.high"))
        elif "memory" in controllers.split(",") and v1_memory_mount:
            found = _tightest(v1_memory_mount, path, "memory.usage_in_bytes", ("memory.limit_in_bytes",))
        else:
            continue
        if found is not None and (best is None or found[0] < best[0]):
            best = found
    return best


#: A limit this large is "no limit" (cgroup v1 writes 2^63 rounded down to a page).
_UNLIMITED = 1 << 62


def _tightest(mount: str, path: str, usage_file: str, limit_files: Sequence[str]) -> Optional[Tuple[int, str]]:
    best: Optional[Tuple[int, str]] = None
    parts = [p for p in path.split("/") if p and p not in (".", "..")]
    for depth in range(len(parts), -1, -1):
        base = os.path.join(mount, *parts[:depth])
        usage = _cgroup_value(base, usage_file)
        if usage is None:
            continue
        for name in limit_files:
            limit = _cgroup_value(base, name)
            if limit is not None and limit < _UNLIMITED and (best is None or limit - usage < best[0]):
                best = (max(0, limit - usage), "/" + "/".join(parts[:depth]))
    return best


def _cgroup_mounts() -> Tuple[Optional[str], Optional[str]]:
    """(cgroup2 mount point, cgroup v1 memory controller's mount point), from this process's mountinfo."""
    v2 = v1 = None
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            text = f.read().decode("utf-8", "surrogateescape")
    except OSError:
        return None, None
    for line in text.splitlines():
        head, _, tail = line.partition(" - ")
        fields, extra = head.split(), tail.split()
        if len(fields) < 5 or len(extra) < 3:
            continue
        if extra[0] == "cgroup2" and v2 is None:
            v2 = fields[4]
        elif extra[0] == "cgroup" and "memory" in extra[2].split(",") and v1 is None:
            v1 = fields[4]
    return v2, v1


def _cgroup_value(base: str, name: str) -> Optional[int]:
    try:
        with open(os.path.join(base, name)) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
