"""Never fill the disk: the free-space reserve, the pre-flight check, the watchdog during the write."""
from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union
else:
    from ._typing import NamedTuple

from ._bounded import output_call
from ._platform import Host
from .errors import InsufficientDiskSpace
from .results import SizeEstimate

GiB = 1 << 30
#: A volume, named by a directory on it or by an open file's descriptor (stdout redirected to a file).
if TYPE_CHECKING:
    Volume = Union[str, int]
else:  # a type alias: at run time only its name (dumplib/_typing.py)
    Volume = object
#: The watchdog looks at free space at least this often (bytes written between checks).
WATCH_EVERY = 64 << 20


def human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def default_reserve(total: int) -> int:
    """Keep at least max(1 GiB, 5% of the volume) free after the dump, unless told otherwise."""
    return max(GiB, total // 20)


# The call form, not the class form: under `from __future__ import annotations` the class form's field
# types are strings, which typing compiles at import (the first compile() costs ~4 ms: start-up).
_Usage = NamedTuple("_Usage", [("total", int), ("free", int)])


def _usage(volume: Volume, host: Host) -> _Usage:
    """Size and free space (for unprivileged writers) of the volume holding *volume*."""
    return _Usage(*host.usage(volume))


class SpaceGuard:
    """Free-space policy for the volume that will hold *directory* (a path, or an open file's descriptor)."""

    def __init__(self, directory: Volume, host: Host, min_free: Optional[int] = None) -> None:
        self.directory, self.host = directory, host
        self.label = "the file stdout is redirected to" if isinstance(directory, int) else directory
        usage = _usage(directory, host)
        self.reserve = default_reserve(usage.total) if min_free is None else int(min_free)

    def free(self) -> int:
        return _usage(self.directory, self.host).free

    def room(self) -> int:
        """Bytes that can still go to this volume with the reserve kept (negative: none can)."""
        return self.free() - self.reserve

    def refuse(self, estimate: SizeEstimate, fitting: Sequence[SizeEstimate], needed: Optional[int] = None,
               why: str = "") -> InsufficientDiskSpace:
        """The refusal: what was needed where, what is free, and the smaller kinds (*fitting*) and
        other volumes that would take the dump. *needed* is what this volume must hold (default:
        the estimate); *why* says how that was worked out when it is not simply the estimate."""
        needed = estimate.bytes if needed is None else needed
        free = self.free()
        hints = [f"--kind {e.kind} (~{human(e.bytes)})" for e in fitting]
        volumes = other_volumes_with_room(self.directory, needed, self.host) if isinstance(self.directory, str) else []
        hints += [f"a path on {v}" for v in volumes]
        advice = ("; it would fit as: " + ", ".join(hints)) if hints else "; free space first"
        return InsufficientDiskSpace(
            f"a {estimate.kind} dump of process {estimate.pid} needs ~{human(needed)}{why} on the volume of"
            f" {self.label}, which has {human(free)} free, and {human(self.reserve)} must stay free"
            f" (--min-free){advice}. Nothing was written and the process was not touched",
            path=str(self.label),
            needed=needed,
            free=free,
            reserve=self.reserve,
            alternatives=hints,
        )

    def watchdog(self, path: str) -> Callable[[int], None]:
        """A callable for the writer: raises InsufficientDiskSpace once free space falls below the reserve.
        It checks every WATCH_EVERY bytes, whenever the figure goes back (a second phase), and at
        CHECK_NOW."""
        last = [0]
        high = [0]
        guard = self

        def check(written: int) -> None:
            high[0] = max(high[0], written)
            if written - last[0] < WATCH_EVERY and written >= last[0]:
                return
            last[0] = written
            # Bounded as the writes are (in the copy's worker): on NFS, or FUSE with a write-back cache,
            # the first request to reach a server that is gone may be this statfs, not a write.
            free = output_call(guard.free)
            if free < guard.reserve:
                raise InsufficientDiskSpace(
                    f"free space on the volume of {guard.label} fell to {human(free)}, below the"
                    f" {human(guard.reserve)} reserve, while the dump was being written or checked (something"
                    " else is filling the disk); the dump was abandoned and the files it had written removed",
                    path=path,
                    needed=high[0],
                    free=free,
                    reserve=guard.reserve,
                )

        return check


def shortfall(needs: Sequence[Tuple[Volume, int, str]], min_free: Optional[int],
              host: Host) -> Optional[Tuple[SpaceGuard, int, str]]:
    """The first volume that cannot take what *needs* ((directory, bytes, what) triples) puts on it
    while keeping its reserve: (its guard, the bytes it would take, what they are); None when
    everything fits. Needs on the same volume add up."""
    per_volume: Dict[Any, List[Any]] = {}
    for directory, n, what in needs:
        entry = per_volume.setdefault(os.stat(directory).st_dev, [directory, 0, []])
        entry[1] += n
        entry[2].append(what)
    for directory, n, whats in per_volume.values():
        guard = SpaceGuard(directory, host, min_free)
        if n > guard.room():
            return guard, n, " plus ".join(whats)
    return None


def other_volumes_with_room(directory: str, needed: int, host: Host) -> List[str]:
    """Mount points of other local volumes that could take *needed* bytes and keep their own reserve."""
    here = _mount_of(directory)
    out: List[str] = []
    seen = set()
    from ._psutil import psutil  # a dump that does not fit: other volumes, every OS alike

    for part in psutil.disk_partitions(all=False):
        mount = part.mountpoint
        if mount == here or mount in seen:
            continue
        seen.add(mount)
        try:
            guard = SpaceGuard(mount, host)
            free = guard.free()
        except OSError:
            continue
        if free - guard.reserve >= needed:
            out.append(f"{mount} ({human(free)} free)")
    return out


def roomiest_directory(preferred: Sequence[str], min_free: Optional[int],
                       usable: Optional[Callable[[str], bool]], host: Host) -> Optional[str]:
    """The usable directory, among *preferred* and the roots of the local volumes, on the volume
    with the most room beyond its reserve; earlier candidates win ties (one per volume). None when
    no candidate is usable. *usable* (the backend's test) replaces the plain writability check."""
    from ._psutil import psutil  # the compressed path's scratch copy only

    candidates = list(preferred) + [p.mountpoint for p in psutil.disk_partitions(all=False)]
    best: Optional[Tuple[int, str]] = None
    seen = set()
    for d in candidates:
        try:
            dev = os.stat(d).st_dev
            if dev in seen or not (usable(d) if usable is not None else os.access(d, os.W_OK)):
                continue
            room = SpaceGuard(d, host, min_free).room()
        except OSError:
            continue
        seen.add(dev)
        if best is None or room > best[0]:
            best = (room, d)
    return best[1] if best else None


def _mount_of(directory: str) -> str:
    path = os.path.realpath(directory)
    while not os.path.ismount(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


#: The figure a dump's tick is called with once the dump is whole, right before it is placed: its disk
#: watchdogs check then whatever the last figure was (the last < 64 MiB were unchecked, and a volume
#: something else filled meanwhile was seen, or not, by the chance of a later read's tick), so a dump,
#: complete or not, never holds the reserve; progress keeps its figure, a cancel is heard once more.
CHECK_NOW = -1


def combine(*callbacks: Optional[Callable[[int], None]]) -> Optional[Callable[[int], None]]:
    live = [c for c in callbacks if c is not None]
    if not live:
        return None

    def call(written: int) -> None:
        for c in live:
            c(written)

    return call


def throttled_progress(callback: Callable[[int, float], None], every: float = 0.25) -> Callable[[int], None]:
    """Turn a progress(bytes, elapsed) callback into a tick(bytes) called often, forwarding at most every *every* s."""
    start = time.monotonic()
    last = [float("-inf")]  # the first tick is forwarded, whatever the clock's origin (Windows': the boot)
    high = [0]

    def tick(written: int) -> None:
        # Never backwards: a Linux core staged in memory ticks the bytes read while the target is
        # stopped, then its writes once it runs from 0 again; Windows' raw dump then its compression
        # likewise (the disk's watchdog and cancel_dumps hear those ticks raw, not through here). The
        # figure stays at its highest, but the callback is still called in that second phase: it may
        # be a watch's abandon check, which a dropped tick kept from ever seeing an interruption or a
        # timeout during a compression (the watcher gave up waiting and the program ended
        # mid-compress, its temporaries left).
        high[0] = max(high[0], written)
        now = time.monotonic()
        if now - last[0] >= every:
            last[0] = now
            callback(high[0], now - start)

    return tick

