"""Reason: why a dump was refused or failed, re-exported by dumplib.errors (its documented home).

A module of its own so that building the enum (~3 M instructions, ~1 ms: 27 members) is paid when
an error carries a reason or someone asks for the class, not at every dump's start-up; dumplib.errors
loads it at the first ``errors.Reason`` and at the first raise with a reason."""
from __future__ import annotations

import enum


class Reason(str, enum.Enum):
    """Why a dump was refused or failed: one spelling per event, for scripts to branch on.

    A ``str`` as well, so ``exc.reason == "disk-full"`` holds and ``--json`` prints the spelling."""

    __module__ = "dumplib.errors"  # where it is documented, imported from and pickled by (errors.__getattr__)

    # TargetRefused
    SELF = "self"  #: the target is the calling process
    ZOMBIE = "zombie"  #: it has exited and holds no memory
    KERNEL_THREAD = "kernel-thread"  #: no user memory to dump
    TRACED = "traced"  #: another debugger holds it
    THREAD_NOT_STOPPING = "thread-not-stopping"  #: a thread did not stop in time (frozen cgroup, D state)
    SNAPSHOT_UNAVAILABLE = "snapshot-unavailable"  #: snapshot=True and none can be taken
    MEMORY_MAP_LOCKED = "memory-map-locked"  #: its mmap lock is held for good (a read stuck on a hung mount)
    # DumpFailed
    EXITED = "exited"  #: the target died while it was being dumped
    DISK_FULL = "disk-full"  #: the volume filled up during the write
    BROKEN_PIPE = "broken-pipe"  #: the reader of stdout went away
    UNVERIFIED = "unverified"  #: the file read back is not what was written
    MAX_PAUSE = "max-pause"  #: the target would have stayed stopped longer than max_pause
    CANCELLED = "cancelled"  #: cancel_dumps() or an interrupted watch
    BUSY = "busy"  #: another dump of the process in this program kept it too long
    SNAPSHOT_LOST = "snapshot-lost"  #: the snapshot was killed during the write
    OUTPUT_STALLED = "output-stalled"  #: the output's file system stopped answering a write
    NO_RESOURCES = "no-resources"  #: the system refused dumplib a thread or a process (a pids limit, short memory)
    MAPS_UNREADABLE = "maps-unreadable"  #: postmortem: the crashed process's maps could not be read
    STREAM_FORMAT = "stream-format"  #: postmortem: the kernel's core stream is not a core
    STREAM_SHORT = "stream-short"  #: postmortem: the kernel's core stream ended early
    STREAM_TIMEOUT = "stream-timeout"  #: postmortem: the kernel's core stream stalled
    # RemoteDestinationError (the probe, before the target is touched), and DumpFailed for upload-failed
    NO_EXTRA = "no-extra"  #: the store's SDK (dumplib[azure] / dumplib[s3]) is not installed
    NO_CREDENTIALS = "no-credentials"  #: no credential found in the standard places
    BAD_CREDENTIALS = "bad-credentials"  #: the store refused the credentials
    NO_CONTAINER = "no-container"  #: the container or bucket does not exist
    NO_PERMISSION = "no-permission"  #: the credentials may not write there
    UNREACHABLE = "unreachable"  #: the store's endpoint could not be reached
    UPLOAD_FAILED = "upload-failed"  #: DumpFailed: the upload failed after the write began; nothing was committed

    def __str__(self) -> str:
        return self.value
