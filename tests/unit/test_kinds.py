import pytest

from dumplib import DumpKind, InvalidKind
from dumplib._windows.masks import describe_mask, windows_mask


def test_parse_accepts_names_any_case_and_members():
    assert DumpKind.parse("FULL") is DumpKind.FULL
    assert DumpKind.parse(" miniplus ") is DumpKind.MINIPLUS
    assert DumpKind.parse(DumpKind.TRIAGE) is DumpKind.TRIAGE


@pytest.mark.parametrize("bad", ["huge", "", None, 3])
def test_parse_rejects_unknown_kinds_naming_the_choices(bad):
    with pytest.raises(InvalidKind) as info:
        DumpKind.parse(bad)
    message = str(info.value)
    assert repr(bad) in message, message  # says what was wrong...
    choices = message.rpartition("choose one of:")[2]
    assert sorted(c.strip() for c in choices.split(",")) == sorted(k.value for k in DumpKind), message  # ...and every choice
    assert sorted(k.value for k in DumpKind) == ["full", "mini", "miniplus", "triage"]  # the kinds README.md documents
    assert isinstance(info.value, ValueError)


def test_documented_windows_masks():
    # These exact values are documented in README.md; changing one is a user-visible change.
    assert windows_mask(DumpKind.FULL) == 0x61826
    assert windows_mask(DumpKind.MINIPLUS) == 0x61B65
    assert windows_mask(DumpKind.MINI) == 0x61965
    assert windows_mask(DumpKind.TRIAGE) == 0x1205AC


def test_full_holds_everything_windbg_dump_ma_holds():
    dot_dump_ma = 0x1826
    assert windows_mask(DumpKind.FULL) & dot_dump_ma == dot_dump_ma


def test_raw_flags_override_and_are_validated():
    assert windows_mask(DumpKind.MINI, 0x2) == 0x2
    for bad in (-1, 0x2000000, True, "0x2"):
        with pytest.raises(InvalidKind):
            windows_mask(DumpKind.MINI, bad)



def test_describe_mask_names_flags():
    assert describe_mask(0x1826) == "0x1826 (WithFullMemory|WithHandleData|WithUnloadedModules|WithFullMemoryInfo|WithThreadInfo)"
    assert describe_mask(0) == "0x0 (Normal)"
