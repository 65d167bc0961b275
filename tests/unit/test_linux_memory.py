"""The Linux writer's zero-page elision and stream padding, on random page mixes (no process needed)."""
import os
import random
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux writer loads libc")


class _Recorder:
    def __init__(self) -> None:
        self.writes = []

    def write_at(self, data, offset) -> None:
        self.writes.append((offset, bytes(data)))


def _page_mix(rng, n, page):
    pages = []
    for _ in range(n):
        r = rng.random()
        if r < 0.4:
            pages.append(bytes(page))
        elif r < 0.6:  # zero except one byte, often inside the first 64 (which the prefilter samples)
            p = bytearray(page)
            p[rng.randrange(0, 64) if rng.random() < 0.5 else rng.randrange(page)] = rng.randint(1, 255)
            pages.append(bytes(p))
        else:
            pages.append(os.urandom(page))
    return pages


def test_zero_pages_are_never_written_and_everything_else_is_in_maximal_runs():
    from dumplib._linux.memory import PAGE, MemoryCopier

    rng = random.Random(7)
    for _ in range(300):
        pages = _page_mix(rng, rng.randint(0, 40), PAGE)
        data = b"".join(pages)
        copier = MemoryCopier.__new__(MemoryCopier)
        copier.buf = bytearray(data) + b"\x07" * PAGE  # data past the range must never be written
        copier.view = memoryview(copier.buf)
        copier._words = copier.view.cast("Q")
        copier.sink = _Recorder()
        copier.written = 0
        copier._write_nonzero(0, len(data), 1000)
        rebuilt = bytearray(len(data))
        for offset, chunk in copier.sink.writes:
            rebuilt[offset - 1000 : offset - 1000 + len(chunk)] = chunk
        assert bytes(rebuilt) == data
        assert copier.written == sum(PAGE for p in pages if any(p))
        for (o1, d1), (o2, _d2) in zip(copier.sink.writes, copier.sink.writes[1:]):
            assert o1 + len(d1) < o2  # a gap (a zero page) between writes, else they would be one


def test_stream_sink_fills_gaps_and_the_tail_with_zeros():
    from dumplib._linux.memory import StreamSink

    out = bytearray()
    sink = StreamSink(out.extend)
    sink.write_at(b"head", 0)
    sink.write_at(b"x", 3 << 20)  # a gap longer than the sink's zero block
    sink.finish((3 << 20) + 10)
    assert bytes(out[:4]) == b"head" and out[3 << 20] == ord("x") and len(out) == (3 << 20) + 10
    assert not any(out[4 : 3 << 20]) and not any(out[(3 << 20) + 1 :])
    with pytest.raises(AssertionError):
        sink.write_at(b"back", 10)
