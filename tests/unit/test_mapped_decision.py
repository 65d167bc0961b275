"""Whether a full core's output is mapped (dumplib/_linux/core/mapped.py): the memory guard (twice the
estimate in MemAvailable and in this process's cgroup) and the writeback rule (at most half of what may
still be dirtied before the kernel starts background writeback; its own threshold, read from
/proc/vmstat, checked against the one derived from /proc/meminfo, /proc/zoneinfo and the sysctls; a
cgroup v2 memory limit's own threshold as the kernel's mdtc_calc_avail computes it), with explicit numbers and
with this host's."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's writeback rules")

if sys.platform.startswith("linux"):
    from dumplib._linux.core import mapped
    from dumplib._linux.core.mapped import EXT4, PAGE, TMPFS, XFS, Readings, memory_refusal, writeback_room

GIB = 1 << 30
MIB = 1 << 20


def readings(*, available=64 * GIB, threshold=8 * GIB, dirty=0, writeback=0, **kw) -> "Readings":
    vmstat = {"nr_dirty_background_threshold": threshold // PAGE, "nr_dirty": dirty // PAGE,
              "nr_writeback": writeback // PAGE, "nr_free_pages": 40 * GIB // PAGE, "nr_active_file": 4 * GIB // PAGE,
              "nr_inactive_file": 4 * GIB // PAGE}
    return Readings(available=available, vmstat=vmstat, **kw)


def test_twice_the_estimate_must_be_available_on_the_host_and_in_the_cgroup():
    size = 512 * MIB
    assert memory_refusal(size, EXT4, readings(available=2 * size)) is None
    assert "MemAvailable" in memory_refusal(size, EXT4, readings(available=2 * size - PAGE))
    assert memory_refusal(size, EXT4, readings(available=None)) is not None  # unknown: written
    assert memory_refusal(size, EXT4, readings(cgroup_room=2 * size)) is None
    assert "cgroup" in memory_refusal(size, EXT4, readings(cgroup_room=2 * size - PAGE))
    assert "cgroup" in memory_refusal(size, TMPFS, readings(cgroup_room=size))  # tmpfs pages are memory too


def test_the_estimate_must_fit_in_half_of_what_may_be_dirtied_before_background_writeback():
    size = 1 * GIB
    assert memory_refusal(size, EXT4, readings(threshold=2 * size)) is None
    assert "writeback" in memory_refusal(size, EXT4, readings(threshold=2 * size - PAGE))
    assert "writeback" in memory_refusal(size, XFS, readings(threshold=2 * size - PAGE))
    # What is dirty or under writeback already is taken off.
    assert "writeback" in memory_refusal(size, EXT4, readings(threshold=3 * size, dirty=size // 2,
                                                              writeback=size // 2 + PAGE))
    assert memory_refusal(size, EXT4, readings(threshold=3 * size, dirty=size // 2, writeback=size // 2)) is None
    # tmpfs is never written back: the rule is not applied there.
    assert memory_refusal(size, TMPFS, readings(threshold=0)) is None
    # No threshold to read (no /proc/vmstat field): written.
    r = readings()
    del r.vmstat["nr_dirty_background_threshold"]
    assert writeback_room(r) is None and memory_refusal(size, EXT4, r) is not None


def test_a_cgroup_v2_memory_limit_has_its_own_background_threshold():
    """mdtc_calc_avail: the cgroup's file pages plus its headroom under memory.max/high (bounded by the
    clean page cache outside it), times the background share; less its own dirty pages."""
    files, headroom = 1 * GIB, 1 * GIB
    r = readings(threshold=8 * GIB, memcg=(files, 0, headroom))
    assert writeback_room(r) == int(0.10 * (files + headroom))  # 10%, the default ratio
    r = readings(threshold=8 * GIB, memcg=(files, 100 * MIB, headroom))
    assert writeback_room(r) == int(0.10 * (files + headroom)) - 100 * MIB
    # The global threshold when it is the lower.
    r = readings(threshold=100 * MIB, memcg=(files, 0, headroom))
    assert writeback_room(r) == 100 * MIB
    # dirty_background_bytes: a share of the global dirtyable memory (48 GiB here), applied to the cgroup's.
    r = readings(threshold=8 * GIB, memcg=(files, 0, headroom), background_bytes=12 * GIB, background_ratio=0,
                 dirty_ratio=40)
    assert writeback_room(r) == int(0.25 * (files + headroom))
    # A background share at or above the dirty limit's is half the limit's, as the kernel has it.
    r = readings(threshold=8 * GIB, memcg=(files, 0, headroom), background_ratio=30, dirty_ratio=20)
    assert writeback_room(r) == int(0.10 * (files + headroom))
    # A cgroup this small refuses a core its host would take.
    size = 256 * MIB
    assert memory_refusal(size, EXT4, readings(threshold=8 * GIB)) is None
    assert "writeback" in memory_refusal(size, EXT4, readings(threshold=8 * GIB, memcg=(files, 0, headroom)))


def _zoneinfo_reserve() -> int:
    """totalreserve_pages as the kernel's calc_totalreserve_pages sums it: per zone, its largest
    lowmem reserve plus its high watermark, at most its managed pages."""
    total, zone = 0, None
    for line in Path("/proc/zoneinfo").read_text().splitlines():
        f = line.split()
        if line.startswith("Node"):
            if zone is not None:
                total += min(zone["managed"], zone["high"] + zone["protection"])
            zone = {"managed": 0, "high": 0, "protection": 0}
        elif zone is not None and len(f) == 2 and f[0] in ("high", "managed"):
            zone[f[0]] = int(f[1])
        elif zone is not None and f and f[0] == "protection:":
            zone["protection"] = max(int(x.strip("(),")) for x in f[1:])
    if zone is not None:
        total += min(zone["managed"], zone["high"] + zone["protection"])
    return total


def _meminfo() -> dict:
    return {ln.split(":")[0]: int(ln.split()[1]) * 1024 for ln in Path("/proc/meminfo").read_text().splitlines()}


def test_this_hosts_background_threshold_is_the_one_its_memory_and_sysctls_give():
    """The threshold dumplib reads (the kernel's, from /proc/vmstat) against the one derived here from
    /proc/meminfo, /proc/zoneinfo and vm.dirty_background_*: dirtyable = free - reserve + file pages."""
    misses = []
    for _ in range(5):  # other processes allocate and free between the reads: one close match is enough
        r = Readings.now()
        info = _meminfo()
        dirtyable = max(0, info["MemFree"] - _zoneinfo_reserve() * PAGE) + info["Active(file)"] + info["Inactive(file)"]
        nbytes = int(Path("/proc/sys/vm/dirty_background_bytes").read_text())
        expected = nbytes if nbytes else dirtyable * int(Path("/proc/sys/vm/dirty_background_ratio").read_text()) // 100
        room = writeback_room(r)
        assert room is not None
        if r.memcg is not None:
            pytest.skip("this process's cgroup has its own threshold: the global one is not the room")
        read = room + info["Dirty"] + info["Writeback"]
        assert r.available is not None
        if abs(read - expected) <= 0.05 * expected + 64 * MIB and abs(r.available - info["MemAvailable"]) <= 256 * MIB:
            return
        misses.append((read, expected, r.available, info["MemAvailable"]))
    raise AssertionError(misses)


def test_on_this_host_a_core_is_mapped_on_ext4_only_within_half_the_writeback_room(tmp_path):
    """The whole decision (refusal) on this host's real figures and file systems. Other processes dirty
    and write back pages between the reads: one attempt of five where all of it holds is enough."""
    if mapped.libc.fs_type(str(tmp_path)) != EXT4 or mapped.libc.fs_type("/dev/shm") != TMPFS:
        pytest.skip("needs an ext4 temporary directory and a tmpfs /dev/shm")
    assert mapped.refusal(str(tmp_path), mapped.MAP_AT_LEAST - PAGE) is not None
    seen = []
    for _ in range(5):
        room = writeback_room(Readings.now())
        assert room is not None
        available = _meminfo()["MemAvailable"]
        big = int(0.5 * room * 1.3) // PAGE * PAGE
        small = max(mapped.MAP_AT_LEAST, int(0.5 * room * 0.5) // PAGE * PAGE)
        if small > 0.5 * room * 0.8 or 2 * big > available * 0.8:
            seen.append(("no size tells the rules apart", room, available))
            continue
        got = (mapped.refusal(str(tmp_path), big), mapped.refusal("/dev/shm", big),
               mapped.refusal(str(tmp_path), small))
        if "writeback" in (got[0] or "") and got[1] is None and got[2] is None:
            return
        seen.append((room, big, small, got))
    if all(isinstance(s[0], str) for s in seen):
        pytest.skip(f"this host's figures leave no size to tell the rules apart: {seen}")
    raise AssertionError(seen)


def test_a_core_that_is_not_mapped_is_staged_in_memory_where_twice_it_is_free_whatever_may_be_dirtied():
    """stage_refusal: the memory rule alone (twice the estimate in MemAvailable and in the cgroup) and
    MAP_AT_LEAST; the writeback rule, which refuses the mapping, says nothing against staging (the
    staged pages are ours, never written back)."""
    size = 512 * MIB
    no_room_to_dirty = readings(threshold=512 * MIB, dirty=400 * MIB)
    assert memory_refusal(size, EXT4, no_room_to_dirty) is not None  # not mapped...
    assert mapped.stage_refusal(size, no_room_to_dirty) is None  # ...staged
    assert "MemAvailable" in mapped.stage_refusal(size, readings(available=2 * size - PAGE))
    assert mapped.stage_refusal(size, readings(available=2 * size)) is None
    assert "cgroup" in mapped.stage_refusal(size, readings(cgroup_room=2 * size - PAGE))
    assert mapped.stage_refusal(size, readings(cgroup_room=2 * size)) is None
    assert "MAP_AT_LEAST" in mapped.stage_refusal(mapped.MAP_AT_LEAST - PAGE, readings())
    assert mapped.stage_refusal(mapped.MAP_AT_LEAST, readings()) is None
