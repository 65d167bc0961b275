"""/proc/PID/smaps parsed once: the target's mappings as Regions, with the fields dumplib uses.

What a core takes of them is chosen by core/selection.py; the read itself (bounded where it must be)
is the caller's.
"""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    import re
    from typing import FrozenSet, Iterator, List, Optional

from ..._record import field, record

PAGE = 4096
#: Never dumped, as in the kernel: per-CPU clock pages and the legacy vsyscall page.
SPECIAL_SKIP = ("[vvar]", "[vvar_vclock]", "[vsyscall]")


@record()
class Region:
    """One line of /proc/PID/maps with the smaps fields dumplib needs."""

    start: int
    end: int
    perms: str
    offset: int
    inode: int
    path: str
    anonymous: int = 0  # bytes of anonymous (private, COW'd or never file-backed) pages
    rss: int = 0
    swap: int = 0
    vmflags: FrozenSet[str] = frozenset()
    dev: str = "00:00"  # major:minor in hex, as maps prints it
    hugetlb: int = 0  # bytes of hugetlb pages (smaps counts them apart from Rss)
    #: Backed by a file (or a shared-memory object): set once, as planning asks it of every mapping often.
    file_backed: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.file_backed = self.inode != 0 and not self.path.startswith("[")

    @property
    def present(self) -> int:
        """Bytes of this mapping that hold pages (resident, swapped or hugetlb): the rest was never touched."""
        return self.rss + self.swap + self.hugetlb

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def readable(self) -> bool:
        return self.perms[0] == "r"

    @property
    def writable(self) -> bool:
        return self.perms[1] == "w"

    @property
    def shared(self) -> bool:
        return self.perms[3] == "s"

    @property
    def elf_flags(self) -> int:
        return (4 if self.perms[0] == "r" else 0) | (2 if self.perms[1] == "w" else 0) | (1 if self.perms[2] == "x" else 0)


_HEADER = r"^([0-9a-f]+)-([0-9a-f]+) (\S+) ([0-9a-f]+) (\S+) (\d+) *(.*)$"
_header_re: Optional["re.Pattern[str]"] = None


def _header() -> "re.Pattern[str]":
    """_HEADER, compiled at the first smaps parsed, not at import: `ps`, `info` and the import of the
    package never parse one. A pattern, not str methods: it matches a header in C, 1.4 us a mapping
    against 2.4-2.8 us for the fastest str-method parse tried, and the layout of a process with
    60 000 mappings parses them while it is stopped."""
    global _header_re
    if _header_re is None:
        import re

        _header_re = re.compile(_HEADER, re.M)
    return _header_re


def header_lines(text: str) -> "Iterator[re.Match[str]]":
    """The mapping lines of smaps *text* (what /proc/PID/maps prints for the same mappings), as matches."""
    return _header().finditer(text)


_SIZES = (("\nRss:", 0), ("\nAnonymous:", 1), ("\nShared_Hugetlb:", 3), ("\nPrivate_Hugetlb:", 3), ("\nSwap:", 2))


def parse_smaps(text: str) -> List[Region]:
    """Regions of /proc/PID/smaps, with the fields dumplib uses.

    A process with 60 000 mappings has 45 MB of smaps: the text is cut into blocks at each
    mapping's last line (VmFlags) and fields are found with str.find, not read line by line.
    """
    blocks = text.split("\nVmFlags:")
    if text.count("\nSize:") != len(blocks) - 1:  # not one VmFlags line per mapping (old kernel, odd text)
        return _parse_smaps_by_header(text)
    regions: List[Region] = []
    match = _header().match
    for i, block in enumerate(blocks):
        if i:
            cut = block.find("\n")
            regions[-1].vmflags = frozenset(block[: cut if cut >= 0 else len(block)].split())
            if cut < 0:
                break
            block = block[cut + 1 :]
        m = match(block)
        if m is None:
            break
        regions.append(_region(m, block))
    return regions


def _parse_smaps_by_header(text: str) -> List[Region]:
    """Older kernels without VmFlags: blocks start at each header line."""
    header = _header()
    starts = [m.start() for m in header.finditer(text)] + [len(text)]
    regions = []
    for lo, hi in zip(starts, starts[1:]):
        block = text[lo:hi]
        m = header.match(block)
        if m is not None:
            regions.append(_region(m, block))
    return regions


def _region(m: "re.Match[str]", block: str) -> Region:
    start, end, perms, offset, dev, inode, path = m.groups()
    sizes = [0, 0, 0, 0]  # rss, anonymous, swap, hugetlb
    head = m.end()
    for label, slot in _SIZES:  # each searched from the top: the kernel's field order is not relied on
        found = block.find(label, head)
        if found >= 0:
            sizes[slot] += int(block[found + len(label) : block.find(" kB", found)]) * 1024
    r = Region(int(start, 16), int(end, 16), perms, int(offset, 16), int(inode), path,
               anonymous=sizes[1], rss=sizes[0], swap=sizes[2], dev=dev, hugetlb=sizes[3])
    at = block.find("\nVmFlags:", head)  # only in blocks cut at headers
    if at >= 0:
        stop = block.find("\n", at + 1)
        r.vmflags = frozenset(block[at + 9 : stop if stop >= 0 else len(block)].split())
    return r
