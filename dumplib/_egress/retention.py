"""Retention (``keep``, ``max_total``) on a store's prefix, by the rule a directory gets (``dumplib.retention``).

What counts as dumplib's dump in a store: an object directly under the prefix the dump was written to
(as a directory's files, not its sub-directories) whose sidecar ``<object>.json`` beside it
- is a dumplib sidecar naming that object,
- carries this key's MAC over the object's store, container, key, size, sha256 and finish time
  (``signing.py``: written by this user of this machine, or by a machine given the same key), and
- states the size the listing shows (and, where the listing carries metadata, Azure, the sha256 the
  object's metadata claims).
Anything else under the prefix is neither counted nor touched. A delete is conditional on the ETag
seen in the listing (If-Match), so an object replaced since it was checked is left alone. The dump's
content is not downloaded to be re-hashed (the disk rule re-hashes): that would cost the whole dump's
size in egress for each deletion; the MAC, the size and the ETag stand in for it.

Cost: one listing and one small GET per sidecar under the prefix; more than ``MAX_OBJECTS`` objects
there and retention does nothing and says so (a listing is in name order, not age order: pruning a
part of it could remove newer dumps than it keeps).
"""
from __future__ import annotations

import dataclasses
import json
import posixpath
import time
from typing import Any, Dict, List, Optional

from ..errors import RemoteDestinationError
from ..placement import SIDECAR_SUFFIX
from ..remote import RemoteTarget
from ..retention import instant, prune, stopped
from . import Listed, Store
from .signing import vouched

#: Names (objects and sub-prefixes) looked at under one prefix; more and retention refuses to guess
#: which are oldest.
MAX_OBJECTS = 10_000
#: A sidecar is a few KiB; anything larger under a sidecar's name is not one (and is not downloaded).
SIDECAR_LIMIT = 64 << 10
#: The longest retention may take after a dump (listing, sidecars, deletes); then it stops and says so.
DEADLINE_SECONDS = 60.0


@dataclasses.dataclass(frozen=True)
class StoredDump:
    finished_at: str
    dump: Listed
    sidecar: Listed
    #: The sidecar's content.
    data: Dict[str, Any] = dataclasses.field(compare=False, repr=False)


class TooMany(Exception):
    """More objects under the prefix than retention looks at."""


class TooSlow(Exception):
    """Retention ran past its deadline."""


def stored_dumps(store: Store, prefix: str, key: bytes, deadline: Optional[float] = None) -> List[StoredDump]:
    """dumplib's dumps directly under *prefix* signed with *key*, oldest first (TooMany past MAX_OBJECTS
    names, TooSlow past the monotonic *deadline*)."""
    listed = store.listing(prefix, MAX_OBJECTS + 1)
    if len(listed) > MAX_OBJECTS:
        raise TooMany(prefix)
    listed = [o for o in listed if not o.key.endswith("/")]  # sub-prefixes counted above, not dumps
    by_key = {o.key: o for o in listed}
    t = store.target
    out: List[StoredDump] = []
    for side in listed:
        if not side.key.endswith(SIDECAR_SUFFIX) or side.size > SIDECAR_LIMIT:
            continue
        dump = by_key.get(side.key[: -len(SIDECAR_SUFFIX)])
        if dump is None:
            continue
        if deadline is not None and time.monotonic() > deadline:
            raise TooSlow(prefix)
        got = store.get_small(side.key, SIDECAR_LIMIT)
        if got is None or got[1] != side.etag or len(got[0]) > SIDECAR_LIMIT:
            continue  # gone, replaced since the listing, or too large to be a sidecar
        try:
            data = json.loads(got[0])
        except (ValueError, RecursionError):
            continue
        if not (isinstance(data, dict) and data.get("tool") == "dumplib"
                and data.get("dump") == posixpath.basename(dump.key)):
            continue
        if vouched(data, key, t.store, t.container, dump.key) != dump.size:
            continue
        if dump.sha256 is not None and dump.sha256 != data["sha256"]:
            continue
        out.append(StoredDump(data["finished_at"], dump, side, data))
    return sorted(out, key=lambda e: (instant(e.finished_at), e.dump.key))


def apply_store_retention(store: Store, written: RemoteTarget, key: bytes, *, keep: Optional[int],
                          max_total: Optional[int]) -> List[str]:
    """Delete the oldest of dumplib's dumps (and sidecars) beside *written* (never it) until at most
    *keep* remain and they total at most *max_total* bytes; what to tell the caller (each removal,
    or why retention did nothing). The dump is committed by then: a store error is told, not raised."""
    prefix = written.prefix
    deadline = time.monotonic() + DEADLINE_SECONDS
    gone: List[StoredDump] = []

    def remove(e: StoredDump) -> bool:
        if time.monotonic() > deadline:
            raise TooSlow(prefix)
        if not store.delete_if(e.dump.key, e.dump.etag):
            return False
        store.delete_if(e.sidecar.key, e.sidecar.etag)
        gone.append(e)
        return True

    def said() -> List[str]:
        return [f"retention removed {written.display(e.dump.key)}" for e in gone]

    # Whatever a planted object or a failing store does here, the dump is committed: retention's trouble
    # is told, never raised (an exception would report a committed dump as failed).
    try:
        entries = stored_dumps(store, prefix, key, deadline)
        prune(entries, keep=keep, max_total=max_total, size=lambda e: e.dump.size,
              protected=lambda e: e.dump.key == written.key,
              still_ours=lambda e: store.still_ours(e.dump, e.data["sha256"]), remove=remove)
    except TooMany:
        return [f"retention did nothing: more than {MAX_OBJECTS} names under {written.display(prefix)},"
                " too many to tell the oldest; give the dumps a prefix of their own"]
    except TooSlow:
        return said() + [f"retention stopped after {DEADLINE_SECONDS:.0f} s under {written.display(prefix)}"]
    except RemoteDestinationError as exc:
        return said() + [f"retention stopped: {exc.message}"]
    except Exception as exc:  # noqa: BLE001 - see above
        return said() + [stopped(exc, written.display(prefix))]
    return said()
