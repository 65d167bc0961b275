"""The Linux writer's zero-page elision and stream padding, on random page mixes (no process needed)."""
import os
import random
import sys

import pytest

from linuxrig import mapping_rss

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
    from dumplib._linux.core.memory import PAGE, MemoryCopier

    rng = random.Random(7)
    for _ in range(300):
        # Up to 200 pages: the check takes page heads 64 pages at a time, and zero runs must stay
        # whole across those groups; the range starts anywhere in the buffer, as a run's does.
        pages = _page_mix(rng, rng.randint(0, 200), PAGE)
        data = b"".join(pages)
        lead = PAGE * rng.randint(0, 3)
        copier = MemoryCopier.__new__(MemoryCopier)
        # data before and past the range must never be written
        copier.buf = bytearray(b"\x07" * lead) + bytearray(data) + b"\x07" * PAGE
        copier.view = memoryview(copier.buf)
        copier.sink = _Recorder()
        copier.written = 0
        copier._write_nonzero(lead, len(data), 1000)
        rebuilt = bytearray(len(data))
        for offset, chunk in copier.sink.writes:
            assert 1000 + lead <= offset and offset + len(chunk) <= 1000 + lead + len(data)
            rebuilt[offset - 1000 - lead : offset - 1000 - lead + len(chunk)] = chunk
        assert bytes(rebuilt) == data
        assert copier.written == sum(PAGE for p in pages if any(p))
        for (o1, d1), (o2, _d2) in zip(copier.sink.writes, copier.sink.writes[1:]):
            assert o1 + len(d1) < o2  # a gap (a zero page) between writes, else they would be one


def test_stream_sink_fills_gaps_and_the_tail_with_zeros():
    from dumplib._linux.core.memory import StreamSink

    out = bytearray()
    sink = StreamSink(out.extend)
    sink.write_at(b"head", 0)
    sink.write_at(b"x", 3 << 20)  # a gap longer than the sink's zero block
    sink.finish((3 << 20) + 10)
    assert bytes(out[:4]) == b"head" and out[3 << 20] == ord("x") and len(out) == (3 << 20) + 10
    assert not any(out[4 : 3 << 20]) and not any(out[(3 << 20) + 1 :])
    with pytest.raises(AssertionError):
        sink.write_at(b"back", 10)


# --- where the data is: coalescing, pieces, pagemap runs, a file's holes -----------------------------

def test_coalesce_merges_gaps_under_64k_only():
    from dumplib._linux.core.memory import GAP, coalesce

    runs = [(0, 4096), (4096 + GAP - 4096, 2 * GAP), (3 * GAP, 3 * GAP + 4096), (3 * GAP + 4096 + GAP, 5 * GAP)]
    assert list(coalesce(iter(runs))) == [(0, 2 * GAP), (3 * GAP, 3 * GAP + 4096), (3 * GAP + 4096 + GAP, 5 * GAP)]
    assert list(coalesce(iter([]))) == []


def test_pieces_store_each_run_and_describe_the_gaps_as_zero_tails():
    from dumplib._linux.core.memory import pieces_of

    got = [(p.start, p.end, p.filesz) for p in pieces_of(0, 100 << 20, iter([(1 << 20, 2 << 20), (50 << 20, 51 << 20)]), 6,
                                                          "pagemap", None)]
    assert got == [(0, 1 << 20, 0), (1 << 20, 50 << 20, 1 << 20), (50 << 20, 100 << 20, 1 << 20)]
    assert [(p.start, p.end, p.filesz) for p in pieces_of(0, 8192, iter([]), 6, "pagemap", None)] == [(0, 8192, 0)]


def test_present_runs_by_pagemap_scan_and_by_pagemap_reads_agree_on_touched_pages():
    import ctypes
    import mmap

    from dumplib._linux.core.memory import PAGE, Prober

    size = 64 << 20
    area = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    base = ctypes.addressof(ctypes.c_char.from_buffer(area))
    touched = [0, 1, 2, 100, 5000, 5001, size // PAGE - 1]
    for page in touched:
        area[page * PAGE] = 1
    expected = [(base, base + 3 * PAGE), (base + 100 * PAGE, base + 101 * PAGE), (base + 5000 * PAGE, base + 5002 * PAGE),
                (base + size - PAGE, base + size)]
    with Prober(os.getpid()) as prober:
        scanned = list(prober.present_runs(base, base + size))
        # One request buffer serves every scan of a Prober: a scan asked while another is being taken
        # (one page, one run asked for) changes nothing of the first.
        interleaved = []
        for run in prober.present_runs(base, base + size):
            interleaved.append(run)
            assert [prober.resident(base + page * PAGE) for page in (0, 3, 100, 4999, 5001)] == [
                True, False, True, False, True]
            assert list(prober.present_runs(base + 4 * PAGE, base + size)) == expected[1:]
        prober._scan_works = False
        read = list(prober.present_runs(base, base + size))
    assert scanned == expected and read == expected and interleaved == expected
    del area  # the ctypes view pins nothing past here


def test_object_runs_follow_a_sparse_file_and_file_end_stops_at_its_last_page(tmp_path):
    from dumplib._linux.proc.maps import Region
    from dumplib._linux.core.memory import PAGE, file_end_address, object_runs

    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.seek(10 << 20)
        f.write(b"x" * 5000)  # data in pages 2560..2561
        f.truncate(64 << 20)
    fd = os.open(path, os.O_RDONLY)
    try:
        runs = list(object_runs(fd, 0, 64 << 20))
    finally:
        os.close(fd)
    assert runs == [(10 << 20, (10 << 20) + 2 * PAGE)], runs
    r = Region(start=1 << 30, end=(1 << 30) + (16 << 30), perms="r--s", offset=PAGE, inode=1, path="/f")
    assert file_end_address(r, 10) == r.start  # the file's only page is before the mapping's offset
    assert file_end_address(r, PAGE + 10) == r.start + PAGE  # a partial last page is still the file's
    assert file_end_address(r, 1 << 40) == r.end



def test_a_mapped_outputs_zero_pages_are_found_by_reading_the_file_back_and_punched(tmp_path):
    """What the copy stored in the mapped output (core/memory.py FileSink) is read back once the target
    runs, through the kernel (preadv), never through the mapping: its zero pages and whatever was never
    stored end as holes, exactly the pages holding data stay data, as the kernel's SEEK_DATA says."""
    from dumplib._linux.core.memory import PAGE, FileSink

    rng = random.Random(5)
    for _ in range(8):
        pages = _page_mix(rng, rng.randint(64, 400), PAGE)
        fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            sink = FileSink(fd)
            sink.prepare((len(pages) + 64) * PAGE)  # sized too high, as an estimate may be
            assert sink.window(0, PAGE) is not None, "not mapped: the test proves nothing"
            skipped = rng.randrange(len(pages))  # one page no read stored: a hole whatever it holds
            for i, page in enumerate(pages):
                if i != skipped:
                    os.pwrite(fd, page, i * PAGE)  # as the kernel's read into the mapping puts it there
                    sink.stored(i * PAGE, PAGE)
            os.pwrite(fd, b"\x01" * PAGE, skipped * PAGE)
            sink.finish(len(pages) * PAGE)
            sink.release()
            end = len(pages) * PAGE
            assert os.fstat(fd).st_size == end
            assert _data_pages(fd, end) == {i for i, p in enumerate(pages) if any(p) and i != skipped}
        finally:
            os.close(fd)
            os.unlink(tmp_path / "out")


def _data_pages(fd: int, end: int) -> set:
    """The pages below *end* that hold data, as the kernel's SEEK_DATA/SEEK_HOLE say."""
    data, at = set(), 0
    while at < end:
        try:
            lo = os.lseek(fd, at, os.SEEK_DATA)
        except OSError:
            break
        hi = os.lseek(fd, lo, os.SEEK_HOLE)
        data.update(range(lo // 4096, hi // 4096))
        at = hi
    return data


def test_a_staged_copy_is_written_with_its_zero_pages_as_holes_and_its_memory_given_back(tmp_path):
    """FileSink.stage: the copy lands in anonymous memory of ours (window()), writes made meanwhile go
    there too, in file order, and one past the staged part goes to the file; finish() writes the staged
    bytes (zero pages left out: holes, as the kernel's SEEK_DATA says) and gives each chunk's memory
    back as it goes (the kernel's Rss of the staged mapping, before the mapping itself is released)."""
    from dumplib._linux.core.memory import CHUNK, PAGE, FileSink

    rng = random.Random(7)
    pages = _page_mix(rng, 3 * CHUNK // PAGE + 40, PAGE)
    staged = (2 << 20) // PAGE  # a whole huge page (staged memory is rounded up to them); the estimate was
    # low: the pages after it are written past the staged part
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # as the writer opens it
    rd = os.open(tmp_path / "out", os.O_RDONLY)
    try:
        sink = FileSink(fd)
        sink.stage(staged * PAGE)
        window = sink.window(0, PAGE)
        assert window is not None, "not staged: the test proves nothing"
        window.release()
        assert mapping_rss(sink._stage.address) >= staged * PAGE  # populated
        sink.write_at(pages[0], 0)  # a write (the core's head) into the staged part
        for i in range(1, staged):
            place = sink.window(i * PAGE, PAGE)
            assert place is not None
            place[:] = pages[i]  # as the kernel's read puts it there
            place.release()
            sink.stored(i * PAGE, PAGE)
        for i in range(staged, len(pages)):
            sink.write_at(pages[i], i * PAGE)
        assert os.fstat(fd).st_size == len(pages) * PAGE  # past the staged part: in the file at once...
        assert not any(os.pread(rd, staged * PAGE, 0))  # ...the staged part not yet
        sink.finish(len(pages) * PAGE)
        assert mapping_rss(sink._stage.address) < CHUNK, "the staged memory was not given back as it was written"
        sink.release()
        assert os.pread(rd, len(pages) * PAGE + 1, 0) == b"".join(pages)
        # Zero pages of the staged part are holes; those written past it by write_at are the caller's
        # to leave out (the copier does), so here they are data.
        assert _data_pages(rd, len(pages) * PAGE) == {i for i, p in enumerate(pages) if any(p) or i >= staged}
    finally:
        os.close(rd)
        os.close(fd)


def test_a_staged_copys_memory_is_not_inherited_by_a_fork(tmp_path):
    """A fork while a copy is staged (a library caller's, in another thread) does not share the staged
    memory copy-on-write, which would copy each page the next read writes: the child has no mapping
    there (its /proc/self/maps)."""
    from dumplib._linux.core.memory import FileSink

    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        sink = FileSink(fd)
        sink.stage(4 << 20)
        assert sink._stage is not None, "not staged: the test proves nothing"
        child = os.fork()
        if child == 0:
            starts = {int(ln.split("-", 1)[0], 16) for ln in open("/proc/self/maps")}
            os._exit(3 if sink._stage.address in starts else 0)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the child inherited the staged memory"
        sink.release()
    finally:
        os.close(fd)


def test_a_staged_copys_memory_goes_back_as_the_file_fills_not_only_at_the_end(tmp_path):
    """While finish() writes 16 MiB of staged data, the staged mapping's Rss (the kernel's) falls: when
    the write reaches 12 MiB, no more than the last few MiB are still held."""
    from dumplib._linux.core.memory import FileSink

    size = 16 << 20
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        sink = FileSink(fd)
        sink.stage(size)
        assert sink._stage is not None, "not staged: the test proves nothing"
        place = sink.window(0, size)
        place[:] = os.urandom(size)
        place.release()
        sink.stored(0, size)
        held = []
        write = sink._pwrite_all

        def pwrite_seen(view, offset):  # the kernel's count, read at a point of the writing
            if offset >= 12 << 20 and not held:
                held.append(mapping_rss(sink._stage.address))
            return write(view, offset)

        sink._pwrite_all = pwrite_seen
        sink.finish(size)
        assert held and held[0] <= 6 << 20, held
        sink.release()
        assert os.path.getsize(tmp_path / "out") == size
    finally:
        os.close(fd)


def test_a_staged_streams_memory_goes_back_as_it_is_sent(tmp_path):
    """StreamSink.stage: while finish() sends 16 MiB of staged data down the stream, the staged
    mapping's Rss (the kernel's) falls: when 12 MiB have gone, no more than the last few MiB are held;
    and the stream got the bytes, in order."""
    from dumplib._linux.core.memory import StreamSink

    size = 16 << 20
    data = os.urandom(size)
    sent = bytearray()
    held = []
    sink: "StreamSink"

    def write(chunk) -> None:  # type: ignore[no-untyped-def]
        if len(sent) >= 12 << 20 and not held:
            held.append(mapping_rss(sink._stage.address))  # type: ignore[union-attr]
        sent.extend(chunk)

    sink = StreamSink(write)
    sink.stage(size)
    assert sink._stage is not None, "not staged: the test proves nothing"
    place = sink.window(0, size)
    place[:] = data
    place.release()
    sink.stored(0, size)
    sink.finish(size)
    assert bytes(sent) == data
    assert held and held[0] <= 6 << 20, held
    assert sink._stage is None  # released once sent
