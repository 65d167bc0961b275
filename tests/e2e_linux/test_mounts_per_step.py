"""A dump classifies a mapped file by the target's own mounts (its mount namespace), read for each step:
the plan's before the stop, the writer's anew while the target is stopped, never one kept from the other.

The target runs in a mount namespace of its own with two tmpfs mounts that dumplib's namespace does not
have, each holding a file the target maps and never touches. A file on a memory file system is taken
up to its end; one on a file system dumplib cannot name (an unmounted one) only where the target has
pages, here nowhere. Between the plan and the write one of the two is unmounted (lazily: the mapping
lives on). Independent readers: findmnt (util-linux) for the target's mounts, readelf for the core.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dumplib
from dumplib._platform import WriteOptions
from dumplib._switch import current
from helpers import require
from linuxrig import have

pytestmark = pytest.mark.linux

SIZE = 64 << 10

#: Run inside `unshare -m`: mounts a tmpfs at each directory given, writes a file there, maps it
#: (private, read-only, never touched), prints the mappings' start addresses, waits on stdin.
TARGET = r"""
import json, mmap, os, subprocess, sys
starts, keep = [], []
for d in sys.argv[1:]:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=700", "dumplib-test", d], check=True)
    path = os.path.join(d, "mapped")
    with open(path, "wb") as f:
        f.write(bytes((i * 7 + i // 4096) & 255 for i in range(%d)))
    fd = os.open(path, os.O_RDONLY)
    keep.append(mmap.mmap(fd, %d, mmap.MAP_PRIVATE, mmap.PROT_READ))
    starts.append(next(int(line.split("-")[0], 16) for line in open("/proc/self/maps") if line.rstrip().endswith(path)))
print(json.dumps(starts), flush=True)
sys.stdin.readline()
""" % (SIZE, SIZE)


def _loads(core: Path) -> dict:
    """readelf's PT_LOADs: virtual address -> (file offset, file size)."""
    out = subprocess.run(["readelf", "-lW", str(core)], capture_output=True, text=True, check=True).stdout
    return {int(m[1], 16): (int(m[0], 16), int(m[2], 16))
            for m in re.findall(r"^\s*LOAD\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+0x[0-9a-f]+\s+(0x[0-9a-f]+)", out, re.M)}


def test_a_file_is_classified_by_the_targets_own_mounts_as_they_are_at_the_stop(tmp_path):
    require(os.geteuid() == 0, "mounting a tmpfs in a mount namespace of the target's own needs root")
    require(have("unshare") and have("nsenter") and have("findmnt") and have("readelf"),
            "util-linux (unshare, nsenter, findmnt) and binutils (readelf) are needed")
    kept, dropped = tmp_path / "kept", tmp_path / "dropped"
    kept.mkdir(), dropped.mkdir()
    proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", sys.executable, "-S", "-c", TARGET,
                             str(kept), str(dropped)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        require(line.strip().startswith("["), f"the target could not mount its tmpfs: {line!r}")
        kept_at, dropped_at = json.loads(line)
        pid = proc.pid

        # The mounts dumplib reads are the target's (findmnt's view of its namespace), not dumplib's own.
        listed = subprocess.run(["findmnt", "--task", str(pid), "-n", "-r", "-o", "MAJ:MIN,FSTYPE,TARGET"],
                                capture_output=True, text=True, check=True).stdout.splitlines()
        theirs = {tuple(map(int, f.split()[0].split(":"))): f.split()[1] for f in listed}
        private = [tuple(map(int, f.split()[0].split(":"))) for f in listed if f.split()[2] in (str(kept), str(dropped))]
        assert len(private) == 2 and str(kept) not in Path("/proc/self/mountinfo").read_text()
        from dumplib._linux.core.memory import Mounts

        mounts = Mounts(pid)
        assert mounts.types == theirs and set(private) <= mounts.memory

        platform = current()
        session = platform.open(dumplib.resolve_target(pid), for_dump=True)
        try:
            plan = session.plan(dumplib.DumpKind.FULL, None)
            # Between the plan and the stop one mount goes (the mapping stays): at the stop its device
            # is in no mountinfo, so its file is read only where the target has pages (nowhere).
            subprocess.run(["nsenter", "-t", str(pid), "-m", "umount", "-l", str(dropped)], check=True)
            core = tmp_path / "full.core"
            session.write(plan, str(core), WriteOptions(comment=None, signature="{}"))
        finally:
            session.close()
        loads = _loads(core)
        assert dropped_at not in loads or loads[dropped_at][1] == 0, loads.get(dropped_at)
        offset, stored = loads[kept_at]
        assert stored == SIZE
        with open(core, "rb") as f:
            f.seek(offset)
            assert f.read(SIZE) == bytes((i * 7 + i // 4096) & 255 for i in range(SIZE))
    finally:
        proc.kill()
        proc.wait()
