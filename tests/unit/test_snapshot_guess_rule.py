"""guess.stale (dumplib/_linux/snapshot/guess.py): which differences between the smaps read before a
snapshot's stop and the clone's smaps mean the guess was wrong at the clone's instant, and the counts
taken from the clone where it was right. The texts are smaps as the kernel prints it; the e2e test
(tests/e2e_linux/test_snapshot_guess.py) makes the kernel produce the real ones."""
from __future__ import annotations

import sys
from typing import List

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux writer loads libc")


def smaps(*blocks: str) -> str:
    return "".join(blocks)


def block(start: int, end: int, perms: str, flags: str, *, path: str = "", inode: int = 0, rss_kb: int = 0,
          anon_kb: int = 0, swap_kb: int = 0) -> str:
    size = (end - start) // 1024
    return (f"{start:08x}-{end:08x} {perms} 00000000 {'08:01' if inode else '00:00'} {inode}"
            f"{' ' * 10 + path if path else ''}\n"
            f"Size:           {size} kB\nRss:            {rss_kb} kB\nAnonymous:      {anon_kb} kB\n"
            f"Swap:           {swap_kb} kB\nVmFlags: {flags}\n")


def regions(text: str) -> List:
    from dumplib._linux.proc import maps

    return maps.parse_smaps(text)


HEAP = (0x1000000, 0x2000000)
LIB = (0x7F0000000000, 0x7F0000010000)


def target(heap_flags: str = "rd wr mr mw me ac", lib_anon: int = 4, heap_rss: int = 100) -> List:
    return regions(smaps(block(*HEAP, "rw-p", heap_flags, rss_kb=heap_rss, anon_kb=heap_rss),
                         block(*LIB, "rw-p", "rd wr mr mw me ac", path="/usr/lib/libx.so", inode=42, rss_kb=8,
                               anon_kb=lib_anon)))


def test_a_clone_that_agrees_gives_its_counts_to_private_anonymous_memory() -> None:
    from dumplib._linux.snapshot.guess import stale

    guessed = target(heap_rss=100)
    clone = target(heap_rss=300)  # written between the read and the stop
    assert stale(guessed, clone) is None
    assert guessed[0].rss == 300 * 1024 and guessed[0].anonymous == 300 * 1024


@pytest.mark.parametrize("flag", ["dd", "wf"])
def test_a_flag_fork_copies_set_since_the_read_is_stale(flag: str) -> None:
    from dumplib._linux.snapshot.guess import stale

    why = stale(target(), target(heap_flags=f"rd wr mr mw me ac {flag}"))
    assert why and flag in why


def test_a_mapping_missing_from_the_clone_is_stale_unless_it_was_dontfork() -> None:
    from dumplib._linux.snapshot.guess import stale

    clone_without_heap = regions(smaps(block(*LIB, "rw-p", "rd wr mr mw me ac", path="/usr/lib/libx.so", inode=42,
                                             rss_kb=8, anon_kb=4)))
    assert "not in the snapshot" in (stale(target(), clone_without_heap) or "")
    assert stale(target(heap_flags="rd wr mr mw me ac dc"), clone_without_heap) is None


def test_userfaultfd_in_the_clone_is_stale() -> None:
    from dumplib._linux.snapshot.guess import stale

    assert "userfaultfd" in (stale(target(), target(heap_flags="rd wr mr mw me ac um")) or "")


def test_a_file_mapping_that_became_written_memory_is_stale() -> None:
    from dumplib._linux.snapshot.guess import stale

    assert stale(target(lib_anon=0), target(lib_anon=4))
    assert stale(target(lib_anon=4), target(lib_anon=8)) is None  # more of the same kind: the selection is the same


def test_the_guess_is_the_stops_only_where_maps_is_the_same_line_for_line() -> None:
    from dumplib._linux.snapshot.guess import read

    target_text = smaps(block(*HEAP, "rw-p", "rd wr mr mw me ac", rss_kb=4),
                               block(*LIB, "r--p", "rd mr mw me", path="/usr/lib/libx.so", inode=42))
    guess = read(target_text, 0.001)
    assert guess is not None
    maps_text = "".join(line + "\n" for line in target_text.splitlines() if line[:1] in "0123456789abcdef" and "-" in line[:17])
    assert guess.holds(maps_text)
    assert not guess.holds(maps_text.replace("r--p", "rw-p"))
    assert not guess.holds(maps_text + "7f0000020000-7f0000021000 rw-p 00000000 00:00 0 \n")
