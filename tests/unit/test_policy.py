from dumplib._windows.policy import mismatched_target_bits


def test_same_bitness_is_fine():
    assert mismatched_target_bits(64, False, False) is None  # 64-bit Python, 64-bit target
    assert mismatched_target_bits(32, True, True) is None  # both WOW64 on 64-bit Windows
    assert mismatched_target_bits(32, False, False) is None  # 32-bit Windows: everything is 32-bit


def test_mismatches_name_the_target_bitness():
    assert mismatched_target_bits(64, False, True) == 32  # 64-bit Python, WOW64 target
    assert mismatched_target_bits(32, True, False) == 64  # WOW64 Python, native 64-bit target
