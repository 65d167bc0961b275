"""A snapshot must not keep the target's closed descriptors alive.

The snapshot is a clone() of the target. Made without CLONE_FILES it holds a duplicate of every
descriptor, so while it lives (the whole write: minutes for a big compressed dump) a descriptor the
target closes is not released: its epoll set keeps reporting it (an event loop that freed the
connection behind data.ptr then uses freed memory), its flock stays held, a peer never sees EOF.
The kernel's answers for the target are the witnesses: epoll_wait, and flock from another process."""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from linuxrig import assert_running_untraced
from snapattack import HeldSnapshot, build, started


def test_descriptors_the_target_closes_while_its_snapshot_lives_are_released(tmp_path: Path) -> None:
    exe = build(tmp_path, "attack_fds_target.c")
    lock_path = tmp_path / "lockfile"
    with started(exe, str(lock_path)) as proc:
        pid = json.loads(proc.stdout.readline())["pid"]
        with HeldSnapshot(pid) as held:
            held.wait_target_running()
            proc.stdin.write("close\n")
            proc.stdin.flush()
            after = json.loads(proc.stdout.readline())
            fd = os.open(lock_path, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                lock_free = True
            except BlockingIOError:
                lock_free = False
            finally:
                os.close(fd)
            held.finish()
            assert after == {"events": 0, "data": 0}, \
                f"epoll_wait reported a descriptor the target had closed ({after}): the snapshot holds a copy of it"
            assert lock_free, "the flock the target released by closing its descriptor is still held by the snapshot"
            assert_running_untraced(pid)
