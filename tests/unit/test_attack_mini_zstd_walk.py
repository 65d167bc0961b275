"""The zstd frame walk that tells a whole stream from one cut short, on crafted input: frames and blocks built
from RFC 8878's layout by hand, each verdict checked against the zstd tool's own (`zstd -t`)."""
from __future__ import annotations

import shutil
import struct
import subprocess
import sys

import pytest

#: The reference is this Linux machine's zstd tool (CI installs it); the Windows interpreter under Wine
#: has none, and the same walk is checked by the Linux run.
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="compares with the zstd tool of the Linux run")

from dumplib.compression import _zstd_frames_complete
from helpers import require

MAGIC = struct.pack("<I", 0xFD2FB528)


def _block(data: bytes, *, last: bool, rle: int = 0) -> bytes:
    """A raw block of *data*, or (*rle* > 0) an RLE block: *data*'s one byte *rle* times."""
    kind, size = (1, rle) if rle else (0, len(data))
    return (int(last) | kind << 1 | size << 3).to_bytes(3, "little") + data


def _frame(content: int, *blocks: bytes, checksum: bool = False) -> bytes:
    """A single-segment frame with a 1-byte content size (*content*); a flagged checksum is not appended."""
    return MAGIC + bytes([0x20 | (0x04 if checksum else 0), content]) + b"".join(blocks)


def _skippable(payload: bytes, claimed: int = -1) -> bytes:
    return struct.pack("<II", 0x184D2A53, len(payload) if claimed < 0 else claimed) + payload


def _zstd_accepts(path) -> bool:
    require(shutil.which("zstd") is not None, "the zstd tool is not installed (apt-get install zstd)")
    return subprocess.run(["zstd", "-t", "-q", str(path)], capture_output=True, timeout=60).returncode == 0


WHOLE = _frame(10, _block(b"hello", last=False), _block(b"x", last=True, rle=5))
CASES = {
    "one frame": (WHOLE, True),
    "frames and a skippable frame": (WHOLE + _skippable(b"meta") + WHOLE, True),
    "cut inside a block": (WHOLE[:-3], False),
    "cut after a block that is not the last": (_frame(5, _block(b"hello", last=False)), False),
    "checksum flagged, cut before it": (_frame(2, _block(b"hi", last=True), checksum=True), False),
    "skippable frame claiming 4 GiB": (WHOLE + _skippable(b"", 0xFFFFFFFF), False),
    "reserved block type": (MAGIC + bytes([0x20, 1]) + (1 | 3 << 1 | 1 << 3).to_bytes(3, "little") + b"z", False),
    "bytes after the last frame": (WHOLE + b"\x00\x01", False),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_frame_walk_agrees_with_zstd(tmp_path, name):
    data, whole = CASES[name]
    path = tmp_path / "crafted.zst"
    path.write_bytes(data)
    assert _zstd_accepts(path) is whole, name  # the expected verdict is zstd's, not dumplib's
    assert _zstd_frames_complete(str(path)) is whole, name


def test_many_tiny_blocks_walk_in_one_pass(tmp_path):
    """A frame of 200,000 empty raw blocks: the walk visits each block once, reading 3 bytes at each."""
    path = tmp_path / "tiny.zst"
    path.write_bytes(_frame(0, *[_block(b"", last=False)] * 200_000, _block(b"", last=True)))
    assert _zstd_accepts(path)
    assert _zstd_frames_complete(str(path))
