"""Plain data the public API returns."""
from __future__ import annotations

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Any, Dict, Optional, Tuple

from ._accel import datetime  # _datetime: the same classes, without the datetime module's start-up
from ._record import asdict, field, record

__all__ = ["DumpResult", "ProcessInfo", "SizeEstimate"]


@record(frozen=True)
class ProcessInfo:
    """One running process, as ``dumplib ps`` and ``AmbiguousProcess`` show it."""

    pid: int
    name: str
    #: Start time, seconds since the epoch (None where the OS would not say).
    started: Optional[float] = None
    user: Optional[str] = None
    #: Private (commit) bytes on Windows, unique set size or private RSS on Linux.
    private_bytes: Optional[int] = None
    #: Working set / resident set size in bytes.
    rss_bytes: Optional[int] = None
    #: Estimated size of a full dump (None where the process cannot be read).
    full_dump_bytes: Optional[int] = None

    def started_text(self) -> str:
        """The start time as local ``YYYY-MM-DD HH:MM:SS`` (for messages), or "at an unknown time"."""
        if self.started is None:
            return "at an unknown time"
        return datetime.datetime.fromtimestamp(self.started).strftime("%Y-%m-%d %H:%M:%S")

    def to_dict(self) -> Dict[str, Any]:
        """The row as a JSON-friendly dict (``dumplib ps --json``)."""
        return asdict(self)


@record(frozen=True)
class DumpResult:
    """What ``create_dump`` wrote."""

    #: Absolute path of the finished dump file, or ``"-"`` when it was streamed to stdout.
    path: str
    pid: int
    process_name: str
    #: The kind's name (``"full"``...).
    kind: str
    #: The raw mask used: MINIDUMP_TYPE on Windows, coredump_filter bits on Linux (None: kind rules).
    flags: Optional[int]
    #: Size of the file in bytes as stored (its apparent size; sparse files use less disk), or the
    #: bytes sent to stdout.
    size: int
    #: Wall-clock seconds create_dump took, lookup to rename.
    seconds: float
    #: ``"windows-dbghelp"`` or ``"linux-elfcore"``.
    backend: str
    warnings: Tuple[str, ...] = ()
    #: Seconds the target was stopped or suspended, where the backend can tell: with a snapshot,
    #: only while the snapshot was taken (Linux: attach to detach; Windows: the capture).
    stopped_seconds: Optional[float] = None
    #: Bytes the file occupies on disk (st_blocks), where the OS reports it.
    disk_bytes: Optional[int] = None
    #: What the pre-flight estimate said the dump would take.
    estimated_bytes: Optional[int] = None
    #: Path of the ``<dump>.json`` sidecar (None with sidecar=False or when streamed to stdout).
    sidecar: Optional[str] = None
    #: ``"zstd"``/``"gzip"`` when the dump was compressed, else None.
    compression: Optional[str] = None
    #: Size of the dump's content before compression (equals *size* when not compressed).
    raw_size: Optional[int] = None
    #: sha256 of the bytes as stored (or as sent to stdout), when computed.
    sha256: Optional[str] = None
    #: Whether the dump was written from a copy-on-write snapshot while the target ran on.
    snapshot: bool = False
    #: Memory the snapshot cost while it lived, in bytes (None: no snapshot, or not measurable).
    snapshot_bytes: Optional[int] = None
    #: Seconds from the upload's start to the object's commit, for a dump sent to a URL (*path* is then
    #: the URL as dumplib shows it), else None.
    upload_seconds: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        """The result as a JSON-friendly dict (``dumplib dump --json``)."""
        data = asdict(self)
        data["warnings"] = list(self.warnings)
        return data


@record(frozen=True)
class SizeEstimate:
    """What a dump of one process would take on disk, from the writer's own selection rules.

    Computed without reading memory contents and without stopping the target.
    """

    pid: int
    kind: str
    flags: Optional[int]
    #: Expected bytes on disk (sparse holes excluded where the backend can tell).
    bytes: int
    #: Bytes per category: stacks, heap, images, shared, metadata.
    breakdown: Dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        """The estimate as a JSON-friendly dict (``dumplib estimate --json``)."""
        return asdict(self)
