"""The bitness verdict compares machines (IMAGE_FILE_MACHINE_*), not pointer widths. Pure logic: runs
on every OS; the real-process cases run on real Windows in tests/unit/test_windows_native.py."""
import pytest

from dumplib._windows.policy import AMD64, ARM64, I386, bitness_verdict, interpreter_machine


def test_same_machine_is_fine_and_silent():
    for machine in (AMD64, I386, ARM64):
        assert bitness_verdict(machine, machine, machine).refusal is None
        assert bitness_verdict(machine, machine, machine).warning is None
    # A 32-bit Python under WOW64 dumping another WOW64 process: both x86.
    assert bitness_verdict(I386, I386, AMD64).refusal is None


def test_64_bit_dumper_on_a_wow64_target_is_allowed_with_a_warning_about_the_debugger():
    verdict = bitness_verdict(AMD64, I386, AMD64)
    assert verdict.refusal is None
    assert "WOW64" in verdict.warning and ".load wow64exts" in verdict.warning and "!sw" in verdict.warning


def test_32_bit_dumper_on_a_64_bit_target_is_refused_naming_the_right_interpreter():
    verdict = bitness_verdict(I386, AMD64, AMD64)
    assert verdict.refusal is not None and "x64 Python" in verdict.refusal


def test_emulated_x64_python_on_arm64_refuses_a_native_arm64_target():
    # Widths agree (64 and 64); the machines do not, and an x64 dbghelp would record x64 contexts.
    verdict = bitness_verdict(AMD64, ARM64, ARM64)
    assert verdict.refusal is not None and "arm64 Python" in verdict.refusal and "x64" in verdict.refusal


@pytest.mark.parametrize("version, bits, machine", [
    ("3.13.2 (tags/v3.13.2:4f8bb39, Feb  4 2025, 15:23:48) [MSC v.1942 64 bit (AMD64)]", 64, AMD64),
    ("3.9.13 (tags/v3.9.13:6de2ca5, May 17 2022, 16:36:42) [MSC v.1929 32 bit (Intel)]", 32, I386),
    ("3.12.0 (tags/v3.12.0:0fb18b0, Oct  2 2023, 13:15:47) [MSC v.1935 64 bit (ARM64)]", 64, ARM64),
])
def test_interpreter_machine_comes_from_how_python_was_built(version, bits, machine):
    assert interpreter_machine(version, bits) == machine


# GetDriveTypeW codes and GetVolumeInformationW flags as Windows reports them (winbase.h, winnt.h).
DRIVE_REMOVABLE, DRIVE_FIXED, DRIVE_REMOTE, DRIVE_RAMDISK = 2, 3, 4, 6
# Volume flags with and without FILE_PERSISTENT_ACLS (0x8), the bit that tells NTFS/ReFS from FAT/exFAT.
NTFS_FLAGS = 0x03E700FF
FAT32_FLAGS = 0x00000206
EXFAT_FLAGS = 0x00020206


@pytest.mark.parametrize("drive, flags, ok", [
    (DRIVE_FIXED, NTFS_FLAGS, True),
    (DRIVE_FIXED, FAT32_FLAGS, False),   # a FAT partition on the system disk
    (DRIVE_FIXED, EXFAT_FLAGS, False),
    (DRIVE_REMOVABLE, NTFS_FLAGS, False),  # an NTFS stick can be pulled mid-dump
    (DRIVE_REMOTE, NTFS_FLAGS, False),
    (DRIVE_RAMDISK, NTFS_FLAGS, False),
])
def test_raw_dumps_wait_only_on_fixed_volumes_that_keep_acls(drive, flags, ok):
    from dumplib._windows.policy import keeps_private_files

    assert keeps_private_files(drive, flags) is ok
