"""Auto mode's rule for a snapshot that would stop the target longer than a normal dump (#16).

The e2e test (tests/e2e_linux/test_snapshot_threads.py) shows the rule acting on a real process; its
decision rests on a measured stop, so the arithmetic is pinned here with figures chosen by hand.
"""
from __future__ import annotations

import sys

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("the Linux snapshot policy", allow_module_level=True)

from dumplib._linux.snapshot.policy import COPY_BYTES_PER_SECOND, LONGER_STOP_FLOOR, longer_stop

MIB = 1 << 20


def test_a_stop_costlier_than_reading_the_memory_in_place_falls_back_and_says_both_figures():
    # 6000 threads stopped in 0.45 s; 49 MiB read in place at 2 GiB/s is ~0.02 s.
    why = longer_stop(6001, 0.45, 49 * MIB, 0)
    assert why is not None
    assert "6001 threads" in why and "~0.45 s" in why and "49 MiB" in why and "~0.02 s" in why


def test_a_stop_under_the_floor_takes_the_snapshot_whatever_the_ratio():
    assert longer_stop(3001, LONGER_STOP_FLOOR - 0.01, 1 * MIB, 0) is None
    assert longer_stop(3001, LONGER_STOP_FLOOR, 1 * MIB, 0) is None


def test_a_large_memory_makes_the_snapshot_the_shorter_stop():
    # 4 GiB read in place is ~2 s of stop; a 0.5 s reap stop is shorter.
    assert longer_stop(8000, 0.5, 4 << 30, 0) is None


def test_memory_read_before_resume_counts_on_the_snapshots_side():
    # The seize alone (0.2 s) is under the floor, but 1 GiB read while stopped pushes the snapshot
    # over the normal dump's 1.5 GiB / 2 GiB/s = 0.75 s.
    normal = 3 * (1 << 29)
    early = 2 << 30
    assert normal / COPY_BYTES_PER_SECOND < 0.2 + early / COPY_BYTES_PER_SECOND
    assert longer_stop(10, 0.2, normal, early) is not None
    assert longer_stop(10, 0.2, normal, 0) is None
