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
    from typing import FrozenSet, List, Optional, Tuple

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


_HEX = frozenset("0123456789abcdef")
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
    for i, block in enumerate(blocks):
        if i:
            cut = block.find("\n")
            regions[-1].vmflags = frozenset(block[: cut if cut >= 0 else len(block)].split())
            if cut < 0:
                break
            block = block[cut + 1 :]
        header = _header(block, 0)
        if header is None:
            break
        regions.append(_region(header, block))
    return regions


def _parse_smaps_by_header(text: str) -> List[Region]:
    """Older kernels without VmFlags: blocks start at each header line."""
    starts, at = [], 0
    while at <= len(text):
        if _header(text, at) is not None:
            starts.append(at)
        nl = text.find("\n", at)
        if nl < 0:
            break
        at = nl + 1
    starts.append(len(text))
    regions = []
    for lo, hi in zip(starts, starts[1:]):
        block = text[lo:hi]
        header = _header(block, 0)
        if header is not None:
            regions.append(_region(header, block))
    return regions


def _header(text: str, at: int) -> Optional[Tuple[Tuple[str, ...], int]]:
    """The fields of the maps header line starting at *at* (start, end, perms, offset, dev, inode,
    path) and where the line ends, or None if it is not one. What the pattern
    ``([0-9a-f]+)-([0-9a-f]+) (\\S+) ([0-9a-f]+) (\\S+) (\\d+) *(.*)$`` matched there, without compiling
    it (nor importing re) at every start-up: only the path is the process's, and it is the rest of
    the line, whatever it holds."""
    end = text.find("\n", at)
    if end < 0:
        end = len(text)
    fields = text[at:end].split(" ", 4)
    if len(fields) != 5:
        return None
    span, perms, offset, dev, tail = fields
    start, dash, stop = span.partition("-")
    if not (dash and _hex(start) and _hex(stop) and _hex(offset) and _word(perms) and _word(dev)):
        return None
    digits = len(tail) - len(tail.lstrip("0123456789")) if tail.isascii() else _decimals(tail)
    if not digits:
        return None
    return (start, stop, perms, offset, dev, tail[:digits], tail[digits:].lstrip(" ")), end


def _hex(text: str) -> bool:
    return bool(text) and _HEX.issuperset(text)


def _word(text: str) -> bool:
    """Non-empty, no white space (the pattern's \\S+)."""
    return bool(text) and not any(c.isspace() for c in text)


def _decimals(text: str) -> int:
    """How many of *text*'s first characters are decimal digits (the pattern's \\d, any script's)."""
    n = 0
    while n < len(text) and text[n].isdecimal():
        n += 1
    return n


def _region(header: Tuple[Tuple[str, ...], int], block: str) -> Region:
    (start, end, perms, offset, dev, inode, path), head = header
    sizes = [0, 0, 0, 0]  # rss, anonymous, swap, hugetlb
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
