"""The ``<dump>.json`` sidecar: what was dumped, how, and the file's sha256, for later trust and retention.

It holds the target's command line (passwords and tokens often live there), so it gets the dump's
protection: created like the dump (exclusive, never through a symlink, owner-only) under a
temporary name, and moved into place together with the dump or not at all (see outputs.py).
"""
from __future__ import annotations

import os

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Any, BinaryIO, Callable, Dict, Optional, Tuple

from ._accel import datetime  # _datetime: the same classes, without the datetime module's start-up
from ._hashing import new_sha256
from ._jsontext import dumps
from ._platform import Plan, Platform, WriteReport
from ._version import __version__
from .placement import SIDECAR_SUFFIX
from .results import ProcessInfo

SUFFIX = SIDECAR_SUFFIX
TOOL = "dumplib"
#: Opening a file found in a listing again: never through a symlink planted at its name since, never
#: waiting for a writer on a FIFO planted there, and never in Windows' text mode.
REOPEN = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)

#: (dump's temporary path, dump's final path, what was stored (its sha256 known), the write's report) -> the
#: sidecar's bytes.
if TYPE_CHECKING:
    SidecarMaker = Callable[[Optional[str], str, Any, WriteReport], bytes]
else:  # a type alias: at run time only its name (dumplib/_typing.py)
    SidecarMaker = object


def sidecar_path(dump_path: str) -> str:
    return dump_path + SUFFIX


def sha256_of(path: str, tick: Optional[Callable[[int], None]] = None) -> str:
    """*path*'s sha256; *tick* (a dump's) hears each 4 MiB read (see sha256_of_stream)."""
    with open(path, "rb") as f:
        # Sized, so that a small file is hashed by the interpreter's own sha256 (new_sha256): loading
        # OpenSSL's would cost more than hashing it.
        return sha256_of_stream(f, size=os.fstat(f.fileno()).st_size, tick=tick)[0]


def sha256_of_stream(f: BinaryIO, block: int = 4 << 20, size: Optional[int] = None,
                     tick: Optional[Callable[[int], None]] = None) -> Tuple[str, int]:
    """(sha256, byte count) of what *f* yields from where it stands to its end (about *size* bytes, if known);
    *tick* (a dump's) hears the count after each block, so a cancel or an abandon reaches a long read."""
    digest = new_sha256(size)
    count = 0
    for chunk in iter(lambda: f.read(block), b""):
        digest.update(chunk)
        count += len(chunk)
        if tick is not None:
            tick(count)
    return digest.hexdigest(), count


def sidecar_maker(proc: ProcessInfo, plan: Plan, started_at: datetime.datetime, comment: Optional[str],
                  codec: Optional[Tuple[str, int]], platform: Platform) -> SidecarMaker:
    """The function the output calls, once the dump is verified and hashed, for the sidecar's bytes."""
    from ._bounded import unanswered

    try:
        command_line = platform.command_line(proc.pid)  # read before the write, while the target surely runs
    except Exception as exc:  # no thread to read it in (a pids limit): the sidecar says none, the dump goes on
        if not unanswered(exc):
            raise
        command_line = None
    host = platform.host_name()

    def make(dump_temp: Optional[str], dump_final: str, stored: Any, report: WriteReport) -> bytes:
        # No temporary: an object sent to a store (outputs.RemoteObject), whose size is what was sent.
        st = os.stat(dump_temp) if dump_temp is not None else None
        data: Dict[str, Any] = {
            "tool": TOOL,
            "version": __version__,
            "dump": os.path.basename(dump_final),
            "host": host,
            "pid": proc.pid,
            "process_name": proc.name,
            "command_line": command_line,
            "kind": plan.kind.value,
            "flags": report.flags if report.flags is not None else plan.flags,
            "started_at": started_at.isoformat(timespec="milliseconds"),
            # With its UTC offset: retention orders dumps by it, across time zones and DST changes.
            "finished_at": datetime.datetime.now().astimezone().isoformat(timespec="milliseconds"),
            "stopped_seconds": report.stopped_seconds,
            "snapshot": report.snapshot,
            "snapshot_bytes": report.snapshot_bytes,
            # What the writer had to say about this dump (e.g. shared memory read after a snapshot resumed).
            "warnings": list(report.warnings),
            "estimated_bytes": plan.estimate.bytes if plan.estimate else None,
            "size": st.st_size if st is not None else stored.size,
            "raw_size": stored.raw_size,
            "disk_bytes": (platform.host().disk_bytes(st) or None) if st is not None else None,
            "sha256": stored.sha256,
            "compression": {"codec": codec[0], "level": codec[1]} if codec else None,
            "comment": comment,
        }
        if st is None:  # where it was sent, as shown everywhere: never a query string or a credential
            data["url"] = stored.path
            data["upload_seconds"] = getattr(stored, "upload_seconds", None)
        data.update({k: v for k, v in platform.sidecar_facts(proc.pid).items() if k not in data})
        return dumps(data, indent=2).encode("utf-8", "surrogateescape")

    return make


def read_sidecar(path: str) -> Optional[Dict[str, Any]]:
    """The sidecar's data if *path* is a dumplib sidecar, else None (foreign files are never trusted)."""
    import json  # reading sidecars (retention, info) is off a dump's path

    try:
        with open(os.open(path, REOPEN), "rb") as f:
            data = json.loads(f.read(1 << 20))
    except (OSError, ValueError, RecursionError):  # RecursionError: "[[[[..." planted to crash us
        return None
    return data if isinstance(data, dict) and data.get("tool") == TOOL and isinstance(data.get("dump"), str) else None
