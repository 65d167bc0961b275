"""Windows decisions that are pure logic (no ctypes), so they are unit-tested on every OS."""
from __future__ import annotations

from typing import Optional


def mismatched_target_bits(dumper_bits: int, dumper_is_wow64: bool, target_is_wow64: bool) -> Optional[int]:
    """The target's bitness when it differs from the dumper's, else None.

    WOW64 means "a 32-bit process on 64-bit Windows"; a 32-bit dumper that is not WOW64 runs on
    32-bit Windows, where every target is 32-bit.
    """
    os_bits = 64 if (dumper_bits == 64 or dumper_is_wow64) else 32
    target_bits = 32 if (target_is_wow64 or os_bits == 32) else 64
    return target_bits if target_bits != dumper_bits else None
