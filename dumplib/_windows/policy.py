"""Windows decisions that are pure logic (no ctypes), so they are unit-tested on every OS."""
from __future__ import annotations

import dataclasses
import struct
import sys
from typing import Dict, Optional

I386, ARMNT, AMD64, ARM64 = 0x014C, 0x01C4, 0x8664, 0xAA64
UNKNOWN = 0
MACHINE_NAMES: Dict[int, str] = {I386: "x86", ARMNT: "arm", AMD64: "x64", ARM64: "arm64"}
MACHINE_BITS: Dict[int, int] = {I386: 32, ARMNT: 32, AMD64: 64, ARM64: 64}


DRIVE_FIXED = 3
FILE_PERSISTENT_ACLS = 0x00000008


def keeps_private_files(drive_type: int, fs_flags: int) -> bool:
    """A volume may hold a raw dump: fixed and local (GetDriveTypeW), and its file system stores
    ACLs (GetVolumeInformationW's FILE_PERSISTENT_ACLS: NTFS, ReFS; not FAT/exFAT, which would
    also cut a dump at 4 GiB). Removable, network, CD and RAM disks are refused."""
    return drive_type == DRIVE_FIXED and bool(fs_flags & FILE_PERSISTENT_ACLS)


def machine_name(machine: int) -> str:
    return MACHINE_NAMES.get(machine, f"machine 0x{machine:04X}")


def interpreter_machine(version: str, pointer_bits: int) -> int:
    """The machine this Python was built for, from ``sys.version`` (``... 64 bit (AMD64)]``).

    An x64 Python on ARM64 Windows runs emulated and says AMD64; IsWow64Process2 on itself would
    report the native ARM64, which is not what its dbghelp writes.
    """
    tail = version.rsplit("(", 1)[-1].upper()
    if "ARM64" in tail:
        return ARM64
    if "ARM" in tail:
        return ARMNT
    if "AMD64" in tail:
        return AMD64
    if "INTEL" in tail or pointer_bits == 32:
        return I386
    return AMD64


#: The machine this Python runs as: its CONTEXT is the one GetThreadContext fills, its dbghelp the
#: one that writes, and the one a target's bitness is judged against.
DUMPER_MACHINE = interpreter_machine(sys.version, 8 * struct.calcsize("P"))


@dataclasses.dataclass(frozen=True)
class BitnessVerdict:
    #: None: the dump can be written; else why it would be wrong.
    refusal: Optional[str] = None
    #: What the user must know about a dump that will be written.
    warning: Optional[str] = None


def bitness_verdict(dumper: int, target: int, native: int) -> BitnessVerdict:
    """Whether a dumper built for *dumper* can write a correct dump of a process running *target*.

    Same machine: fine. A native 64-bit dumper and a WOW64 (32-bit) target: valid (ProcDump's
    ``-64``), but the dump is of the 64-bit view of the process. Anything else would be wrong:
    a WOW64 dbghelp cannot read a 64-bit address space, and an emulated x64 dbghelp records x64
    contexts for an ARM64 process.
    """
    if dumper == target:
        return BitnessVerdict()
    if dumper == native and MACHINE_BITS.get(dumper) == 64 and MACHINE_BITS.get(target) == 32:
        return BitnessVerdict(warning=(
            f"the target is a 32-bit ({machine_name(target)}) process under WOW64 and this Python is"
            f" {machine_name(dumper)}: the dump holds the 64-bit view of it, so a debugger first shows"
            " the WOW64 layer's 64-bit threads and modules; in WinDbg run `.load wow64exts` then `!sw`"
            " for the 32-bit stacks, or dump it with a 32-bit Python for a plain 32-bit dump"
        ))
    return BitnessVerdict(refusal=(
        f"the target runs {machine_name(target)} code and this Python is {machine_name(dumper)}"
        f" (on {machine_name(native)} Windows): its dbghelp cannot write a correct dump of it."
        f" Run dumplib with a {machine_name(target)} Python instead"
    ))


@dataclasses.dataclass(frozen=True)
class ContextLayout:
    """Where winnt.h puts what a CONTEXT of one machine needs to be filled and read."""

    size: int
    #: Offset of ContextFlags, which says which register groups GetThreadContext fills.
    flags_offset: int
    #: The structure's declared alignment (GetThreadContext fails on a misaligned one).
    align: int
    #: Offset of the instruction pointer (Rip, Eip, Pc).
    ip_offset: int
    ip_size: int
    #: CONTEXT_ALL: control, integer, segments, floating point, debug registers (x86 adds its
    #: extended registers, ARM64 x18).
    all_flags: int


#: The CONTEXT of each machine, as the dumper's own GetThreadContext and dbghelp read it: an x86
#: Python's is 716 bytes with its flags first, not x64's 1232 with them at 0x30.
CONTEXT_LAYOUTS: Dict[int, ContextLayout] = {
    AMD64: ContextLayout(size=0x4D0, flags_offset=0x30, align=16, ip_offset=0xF8, ip_size=8, all_flags=0x0010001F),
    I386: ContextLayout(size=0x2CC, flags_offset=0x0, align=4, ip_offset=0xB8, ip_size=4, all_flags=0x0001003F),
    ARM64: ContextLayout(size=0x390, flags_offset=0x0, align=16, ip_offset=0x108, ip_size=8, all_flags=0x0040001F),
    ARMNT: ContextLayout(size=0x1A0, flags_offset=0x0, align=8, ip_offset=0x40, ip_size=4, all_flags=0x0020000F),
}
