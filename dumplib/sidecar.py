"""The ``<dump>.json`` sidecar: what was dumped, how, and the file's sha256, for later trust and retention."""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import socket
from typing import Any, BinaryIO, Dict, Optional, Tuple

import psutil

from ._backend import Plan, WriteReport
from ._version import __version__
from .results import DumpResult, ProcessInfo

SUFFIX = ".json"
TOOL = "dumplib"


def sidecar_path(dump_path: str) -> str:
    return dump_path + SUFFIX


def sha256_of(path: str) -> str:
    with open(path, "rb") as f:
        return sha256_of_stream(f)[0]


def sha256_of_stream(f: BinaryIO, block: int = 4 << 20) -> Tuple[str, int]:
    """(sha256, byte count) of what *f* yields from where it stands to its end."""
    digest = hashlib.sha256()
    count = 0
    for chunk in iter(lambda: f.read(block), b""):
        digest.update(chunk)
        count += len(chunk)
    return digest.hexdigest(), count


def write_sidecar(result: DumpResult, proc: ProcessInfo, plan: Plan, started_at: datetime.datetime,
                  report: WriteReport, comment: Optional[str], codec: Optional[Tuple[str, int]]) -> DumpResult:
    """Write ``<dump>.json`` beside *result*'s file; return the result with its sidecar path and sha256."""
    dump_path = result.path
    st = os.stat(dump_path)
    # Of the file as stored (read back from it, during or after the write): what a later check compares.
    sha = result.sha256 or sha256_of(dump_path)
    data: Dict[str, Any] = {
        "tool": TOOL,
        "version": __version__,
        "dump": os.path.basename(dump_path),
        "host": socket.gethostname(),
        "pid": proc.pid,
        "process_name": proc.name,
        "command_line": _cmdline(proc.pid),
        "kind": plan.kind.value,
        "flags": plan.flags,
        "started_at": started_at.isoformat(timespec="milliseconds"),
        "finished_at": datetime.datetime.now().isoformat(timespec="milliseconds"),
        "stopped_seconds": report.stopped_seconds,
        "estimated_bytes": plan.estimate.bytes if plan.estimate else None,
        "size": st.st_size,
        "raw_size": result.raw_size,
        "disk_bytes": getattr(st, "st_blocks", 0) * 512 or None,
        "sha256": sha,
        "compression": {"codec": codec[0], "level": codec[1]} if codec else None,
        "comment": comment,
    }
    path = sidecar_path(dump_path)
    temp = path + f".{os.getpid()}.tmp"
    with open(temp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.replace(temp, path)
    return dataclasses.replace(result, sidecar=path, sha256=sha)


def read_sidecar(path: str) -> Optional[Dict[str, Any]]:
    """The sidecar's data if *path* is a dumplib sidecar, else None (foreign files are never trusted)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("tool") == TOOL and isinstance(data.get("dump"), str) else None


def _cmdline(pid: int) -> Optional[list]:
    try:
        return psutil.Process(pid).cmdline()
    except (psutil.Error, OSError):
        return None
