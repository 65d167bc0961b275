"""Dumping must not duplicate memory a process shares copy-on-write (a prefork server's worker and its
master, or a snapshot and its target).

process_vm_readv pins what it reads, and the kernel copies a shared anonymous page before pinning
it: a dump read that way made the target copy everything it shared. The kernel's own accounting
(smaps_rollup of the target) is the reader here.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import dumplib
from helpers import require
from linuxrig import have

SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(void) {
    size_t size = 64 << 20;
    char *shared = malloc(size);
    memset(shared, 7, size);          /* dirty anonymous pages, then shared with a child by fork */
    pid_t child = fork();
    if (child == 0) { pause(); _exit(shared[1]); }
    printf("%d\n", child);
    fflush(stdout);
    getchar();                        /* hold until the test is done */
    return shared[size - 1] == 7 ? 0 : 1;
}
"""


def _kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in smaps_rollup")


@pytest.fixture()
def sharing_process(tmp_path: Path):
    require(have("gcc"), "gcc is not installed; the test target cannot be built")
    src = tmp_path / "sharing.c"
    src.write_text(SOURCE)
    exe = tmp_path / "sharing"
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(src)], check=True)
    proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    try:
        yield proc.pid, child
    finally:
        subprocess.run(["kill", "-9", str(child)], check=False)
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("snapshot", [False, True], ids=["normal", "snapshot"])
def test_a_dump_does_not_copy_what_the_target_shares_with_its_child(sharing_process, tmp_path: Path,
                                                                     snapshot: bool) -> None:
    pid, _child = sharing_process
    shared_before = _kib(pid, "Shared_Dirty")
    assert shared_before >= 60 << 10, f"the target shares only {shared_before} KiB: the fixture did not work"
    result = dumplib.create_dump(pid, str(tmp_path / "d.core"), "full", sidecar=False, snapshot=snapshot)
    assert result.snapshot is snapshot
    # Every shared page is still shared, and the target did not gain private copies of them.
    assert _kib(pid, "Shared_Dirty") >= shared_before - 1024
    assert _kib(pid, "Private_Clean") < 8 << 10
    if snapshot:
        # The snapshot itself held almost nothing of its own: reading it copied nothing.
        assert result.snapshot_bytes is not None and result.snapshot_bytes < 16 << 20, result.snapshot_bytes
