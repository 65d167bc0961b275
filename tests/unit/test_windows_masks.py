"""The MINIDUMP_TYPE masks: what README.md documents is what dbghelp is asked for (pure logic)."""
import re
from pathlib import Path

import pytest

from dumplib import DumpKind, InvalidKind
from dumplib._windows.masks import MINIDUMP_NEWER_FLAGS, MiniDumpType, streams_for_mask, windows_mask

README = Path(__file__).resolve().parents[2] / "README.md"
#: ProcDump -mm as observed (research/anchors.md), and what dumplib leaves out of it on purpose.
PROCDUMP_MM = 0x469925
LEFT_OUT = MiniDumpType.WithIptTrace | MiniDumpType.WithFullAuxiliaryState


def _readme_masks():
    rows = re.findall(r"^\| `(\w+)`(?: \(default\))? \| `(0x[0-9A-F]+)`", README.read_text(), re.MULTILINE)
    return {kind: int(mask, 16) for kind, mask in rows}


def test_readme_kinds_table_is_the_masks_dumplib_uses():
    documented = _readme_masks()
    assert set(documented) == {k.value for k in DumpKind}, documented
    for kind in DumpKind:
        assert windows_mask(kind) == documented[kind.value], kind


def test_mini_is_procdump_mm_with_the_indirectly_referenced_memory_procdump_documents():
    mini = windows_mask(DumpKind.MINI)
    assert mini & MiniDumpType.WithIndirectlyReferencedMemory
    assert mini & ~MiniDumpType.WithIndirectlyReferencedMemory == PROCDUMP_MM & ~LEFT_OUT


def test_miniplus_is_mini_plus_the_private_read_write_memory():
    assert windows_mask(DumpKind.MINIPLUS) == windows_mask(DumpKind.MINI) | MiniDumpType.WithPrivateReadWriteMemory


@pytest.mark.parametrize("flag", list(MiniDumpType), ids=lambda f: f.name)
def test_every_documented_flag_is_accepted_as_a_raw_mask(flag):
    assert windows_mask(DumpKind.MINI, int(flag)) == int(flag)


def test_the_newest_documented_flags_are_accepted_and_dropped_only_on_an_old_dbghelp():
    newest = MiniDumpType.ScanInaccessiblePartialPages | MiniDumpType.FilterWriteCombinedMemory | MiniDumpType.WithIptTrace
    assert windows_mask(DumpKind.MINI, int(newest)) == newest
    assert newest & MINIDUMP_NEWER_FLAGS == newest and MINIDUMP_NEWER_FLAGS & 0x1FFFFF == 0
    with pytest.raises(InvalidKind):
        windows_mask(DumpKind.MINI, 0x02000000)  # past FilterWriteCombinedMemory: not a dbghelp flag


def test_streams_each_kind_obliges_dbghelp_to_write():
    assert streams_for_mask(windows_mask(DumpKind.FULL)) == {
        9: "WithFullMemory", 12: "WithHandleData", 16: "WithFullMemoryInfo", 17: "WithThreadInfo",
        19: "WithTokenInformation"}
    assert set(streams_for_mask(windows_mask(DumpKind.MINI))) == {12, 16, 17, 19}
    assert streams_for_mask(0) == {}
