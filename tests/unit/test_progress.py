"""The progress callback a dump is given (create_dump's progress=, a watch's abandon check) hears every
phase of the write at its pace, and its figure never goes backwards."""
from __future__ import annotations

import time
from typing import List

import pytest

from dumplib.space import throttled_progress


def test_a_second_phase_counting_from_zero_still_reaches_the_callback_with_the_highest_figure() -> None:
    heard: List[int] = []
    tick = throttled_progress(lambda written, elapsed: heard.append(written), every=0.0)
    for written in (0, 10, 20):  # the raw write (or a staged core's read)
        tick(written)
    for written in (0, 5, 15, 25):  # then its compression (or the staged core's write) from 0 again
        tick(written)
    assert heard == [0, 10, 20, 20, 20, 20, 25]


def test_an_abandon_check_raising_in_the_second_phase_reaches_the_writer() -> None:
    class Abandoned(Exception):
        pass

    stop = []

    def check(written: int, elapsed: float) -> None:
        if stop:
            raise Abandoned(written)

    tick = throttled_progress(check, every=0.0)
    tick(100)
    stop.append(True)  # the watch is interrupted while the compression runs, far below the raw size
    with pytest.raises(Abandoned):
        tick(1)


def test_calls_are_at_most_one_per_interval_and_the_first_at_once() -> None:
    """The first tick goes through however young the clock is: time.monotonic() counts from the boot
    (Windows, Linux), and a machine up for less than the interval (a CI runner) heard nothing at first."""
    heard: List[int] = []
    every = time.monotonic() + 3600.0  # longer than this machine has been up
    tick = throttled_progress(lambda written, elapsed: heard.append(written), every=every)
    for written in range(1000):
        tick(written)
    assert heard == [0]  # the first at once, the rest within the interval


def test_a_read_back_hears_the_dumps_tick_after_each_block_and_stops_where_it_raises() -> None:
    """The compressed dump's check (decompressed whole and hashed, outputs._check_round_trip) ticks as it
    reads: a cancel or a watch's abandon check raising there ends it, rather than waiting for the end."""
    import io

    from dumplib.sidecar import sha256_of_stream

    class Abandoned(Exception):
        pass

    heard: List[int] = []

    def tick(count: int) -> None:
        heard.append(count)
        if count >= 3 << 20:
            raise Abandoned

    with pytest.raises(Abandoned):
        sha256_of_stream(io.BytesIO(bytes(10 << 20)), block=1 << 20, tick=tick)
    assert heard == [1 << 20, 2 << 20, 3 << 20]
