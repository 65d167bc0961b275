"""Size- and count-based retention of the dumps dumplib wrote in one directory (never anything else).

Anyone who can write to the directory can plant files there, so a file counts as a dumplib dump
only when the caller owns both it and its sidecar, both are regular files (not symlinks), and
the sidecar's size and sha256 match the file; the sha256 is checked right before a deletion.
"""
from __future__ import annotations

import dataclasses
import os
import stat
from typing import Callable, List, Optional, Sequence, TypeVar

from ._platform import Host
from .errors import DumpFailed
from .placement import remove_if_same
from .sidecar import REOPEN, SUFFIX, read_sidecar, sha256_of_stream


@dataclasses.dataclass(frozen=True)
class _Entry:
    finished_at: str
    dump: str
    dump_stat: os.stat_result
    sidecar: str
    sidecar_stat: os.stat_result
    sha256: str
    #: Bytes the dump takes on disk (its size where stat does not say).
    disk_bytes: int


def _own_regular(path: str, host: Host) -> Optional[os.stat_result]:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    if not host.mine(st, path):
        return None
    return st


class RetentionStopped(Exception):
    """The dump's tick raised during retention's reads (a cancel, a watch's end): what was removed by
    then, and what to tell."""

    def __init__(self, removed: List[str], message: str) -> None:
        super().__init__(message)
        self.removed, self.message = removed, message


class _Heard:
    """The dump's tick, with what it raised kept: _still_ours's ``except OSError`` (a file gone or
    changed: not ours) must not take a tick's own OSError (a progress callback's EPIPE) for that."""

    def __init__(self, tick: Callable[[int], None]) -> None:
        self.tick = tick
        self.raised: Optional[BaseException] = None

    def __call__(self, count: int) -> None:
        try:
            self.tick(count)
        except BaseException as exc:
            self.raised = exc
            raise


def _still_ours(e: _Entry, heard: Optional[_Heard] = None) -> bool:
    """Whether *e*'s dump is still the very file listed, holding what its sidecar vouches for. Gone or
    replaced since the listing (another dumplib's retention in this directory removed it; then anyone
    may put a link or a FIFO at the free name) is not ours: False, never followed, never waited on.
    *heard* (the dump's tick) hears each 4 MiB read: hashing a 10 GB dump takes 5-20 s, and a cancel or
    a watch's end must not wait for it (what it raises stops retention; the dump just written stays)."""
    try:
        fd = os.open(e.dump, REOPEN)
    except OSError:
        return False
    with open(fd, "rb") as f:
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (e.dump_stat.st_dev, e.dump_stat.st_ino):
                return False
            return sha256_of_stream(f, size=st.st_size, tick=heard)[0] == e.sha256
        except OSError:
            if heard is not None and heard.raised is not None:
                raise
            return False


def dumps_in(directory: str, host: Host) -> List[_Entry]:
    """dumplib's dumps in *directory* by the cheap checks (owner, regular, sizes), oldest first."""
    out: List[_Entry] = []
    for name in os.listdir(directory):
        if not name.endswith(SUFFIX):
            continue
        sidecar = os.path.join(directory, name)
        side_st = _own_regular(sidecar, host)
        if side_st is None:
            continue
        data = read_sidecar(sidecar)
        if data is None or data["dump"] != name[: -len(SUFFIX)] or not isinstance(data.get("sha256"), str):
            continue
        dump = os.path.join(directory, data["dump"])
        st = _own_regular(dump, host)
        if st is None or data.get("size") != st.st_size:
            continue
        out.append(_Entry(str(data.get("finished_at", "")), dump, st, sidecar, side_st, data["sha256"],
                          host.disk_bytes(st) or st.st_size))
    return sorted(out, key=lambda e: (instant(e.finished_at), e.dump))


E = TypeVar("E")


def instant(finished_at: str) -> float:
    """A sidecar's ``finished_at`` as seconds since the epoch, for ordering: with its UTC offset as written
    now, or as local time (sidecars written before the offset was recorded); unreadable: the oldest."""
    import datetime

    try:
        when = datetime.datetime.fromisoformat(finished_at)
    except (TypeError, ValueError):
        return float("-inf")
    return when.timestamp()  # a naive time is taken as local, as it was written


def prune(entries: Sequence[E], *, keep: Optional[int], max_total: Optional[int], size: Callable[[E], int],
          protected: Callable[[E], bool], still_ours: Callable[[E], bool], remove: Callable[[E], bool]) -> List[E]:
    """The one retention rule, for a directory and for a store's prefix alike: walk *entries* oldest
    first, removing until at most *keep* remain and they total at most *max_total*.

    *protected* (the dump just written) is never removed but still counts; *still_ours* is the check
    made right before a removal (the content still matches what the sidecar vouches for): an entry
    that fails it is not dumplib's any more, and is left alone and no longer counted. *remove* says
    whether it removed the entry (False: it changed under us, and is left alone too)."""
    removed: List[E] = []
    total = sum(size(e) for e in entries)
    count = len(entries)
    for e in entries:
        over_count = keep is not None and count > keep
        over_size = max_total is not None and total > max_total
        if not (over_count or over_size):
            break
        if protected(e):
            continue
        if still_ours(e) and remove(e):
            removed.append(e)
        total -= size(e)
        count -= 1
    return removed


def apply_retention(directory: str, *, keep: Optional[int], max_total: Optional[int], protect: str,
                    host: Host, tick: Optional[Callable[[int], None]] = None) -> List[str]:
    """Delete the oldest dumps (and their sidecars) until at most *keep* remain and they total at most *max_total* bytes.

    Only dumplib's own dumps (see the module doc) are candidates; *protect* (the dump just
    written) is never removed; a candidate whose content no longer matches its sidecar's sha256
    is not dumplib's dump any more and is left alone and not counted.
    """
    gone: List[str] = []

    def remove(e: _Entry) -> bool:
        if not remove_if_same(e.dump, e.dump_stat):
            return False
        remove_if_same(e.sidecar, e.sidecar_stat)
        gone.append(e.dump)
        return True

    heard = _Heard(tick) if tick is not None else None
    try:
        prune(dumps_in(directory, host), keep=keep, max_total=max_total, size=lambda e: e.disk_bytes,
              protected=lambda e: os.path.abspath(e.dump) == os.path.abspath(protect),
              still_ours=lambda e: _still_ours(e, heard), remove=remove)
    except Exception as exc:
        if heard is None or heard.raised is not exc:
            raise
        # Stopped by the dump's tick: the removals made by then are still told (RetentionStopped).
        raise RetentionStopped(gone, stopped(exc, directory)) from None
    return gone


def stopped(exc: BaseException, where: str) -> str:
    """What to tell of an exception that stopped retention in *where*, once the dump was committed."""
    if isinstance(exc, DumpFailed) and exc.reason == "cancelled":
        # The dump's own tick, raised during retention's reads: its text speaks of a partial file
        # removed, which is not so of a dump already in place.
        return (f"retention stopped while reading {where}: the dump was cancelled or its watch ended; the"
                " dump is in place, and the older dumps not yet removed were left as they were")
    detail = f" ({exc.strerror})" if isinstance(exc, OSError) and exc.strerror else ""
    return f"retention stopped: {type(exc).__name__}{detail} while reading {where}; the dump is in place"


def told_not_raised(retain: Callable[[], List[str]], where: str) -> List[str]:
    """*retain*'s messages; whatever it raises becomes one more. It runs once the dump is committed: an
    exception would report a dump that exists as failed (exit 1, "internal error")."""
    try:
        return retain()
    except Exception as exc:  # noqa: BLE001 - see above
        return [stopped(exc, where)]
