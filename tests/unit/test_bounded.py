"""dumplib._bounded: a call that blocks is abandoned after its bound, and a key stays stuck until it returns."""
from __future__ import annotations

import os
import time

import pytest

from dumplib._bounded import call_within, stuck


def test_a_blocked_call_is_abandoned_and_its_key_fails_at_once_until_it_returns():
    r, w = os.pipe()  # a read of an empty pipe blocks in the kernel, as a read of a stuck /proc file does
    try:
        with pytest.raises(TimeoutError):
            call_within(lambda: os.read(r, 1), 0.2, key="k")
        assert stuck("k")
        ran = []
        with pytest.raises(TimeoutError):
            call_within(lambda: ran.append(1), 60, key="k")  # not tried: the earlier read still blocks
        assert ran == [] and call_within(lambda: "other", 60, key="other") == "other"
        os.write(w, b"x")  # the abandoned read returns
        deadline = time.monotonic() + 60
        while stuck("k") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not stuck("k")
        assert call_within(lambda: "again", 60, key="k") == "again"
    finally:
        os.close(r)
        os.close(w)


def test_the_calls_result_and_exceptions_come_back():
    assert call_within(lambda: 42, 60) == 42
    with pytest.raises(ZeroDivisionError):
        call_within(lambda: 1 // 0, 60)
    with pytest.raises(FileNotFoundError):  # an OSError of the call is the caller's, not a timeout
        call_within(lambda: open("/proc/0/cmdline", "rb"), 60)
