"""Raw coredump_filter masks (core(5)): the bits the kernel defines pass, anything else is InvalidKind."""
import sys

import pytest

from dumplib import InvalidKind

if not sys.platform.startswith("linux"):  # dumplib._linux raises ImportError elsewhere (its guard)
    pytest.skip("tests of dumplib._linux, which imports on Linux only", allow_module_level=True)

from dumplib._linux.core.corefilter import LINUX_FILTER_ALL, CoreFilter, linux_filter  # noqa: E402

def test_linux_filter_bits():
    assert linux_filter(None) is None
    assert linux_filter(0x33) == 0x33
    with pytest.raises(InvalidKind):
        linux_filter(LINUX_FILTER_ALL + 1)


def test_the_filter_bits_are_the_kernels():
    # core(5): bit 0 anonymous private ... bit 8 DAX shared; 0x1FF is every bit it defines.
    assert [int(b) for b in CoreFilter] == [1 << i for i in range(9)] and LINUX_FILTER_ALL == 0x1FF
