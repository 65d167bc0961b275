import datetime
import os

import pytest

from dumplib import DumpExists, DumpKind, InvalidDumpPath, ProcessInfo
from dumplib.placement import is_temp_name, expand_tokens, finalize_all, plan_destination
from dumplib._switch import current

HOST = current().host()

PROC = ProcessInfo(pid=4242, name="My:Proc.exe")
WHEN = datetime.datetime(2026, 11, 26, 7, 5, 9)


def test_brace_and_procdump_tokens_expand():
    assert expand_tokens("{name}_{pid}_{date}_{time}_{kind}", PROC, DumpKind.FULL, WHEN) == "My_Proc_4242_261126_070509_full"
    assert expand_tokens("PROCESSNAME-PID-YYMMDD-HHMMSS", PROC, DumpKind.MINI, WHEN) == "My_Proc-4242-261126-070509"


def test_procdump_tokens_only_replace_whole_words():
    assert expand_tokens("PIDGIN_PID", PROC, DumpKind.MINI, WHEN) == "PIDGIN_4242"


def test_directory_gets_default_name_and_temp_beside_it(tmp_path):
    dest = plan_destination(str(tmp_path), PROC, DumpKind.MINI, overwrite=False, extension=".dmp", when=WHEN, host=HOST)
    assert dest.final == os.path.join(str(tmp_path), "My_Proc_4242_261126_070509.dmp")
    assert os.path.dirname(dest.temp) == str(tmp_path)
    assert is_temp_name(os.path.basename(dest.temp))
    assert len(os.path.basename(dest.temp)) <= 30  # any legal final name keeps a legal temporary beside it


def test_a_default_name_taken_in_the_same_second_gets_a_counter(tmp_path):
    first = tmp_path / "My_Proc_4242_261126_070509.core.gz"
    first.write_bytes(b"earlier dump")
    (tmp_path / "My_Proc_4242_261126_070509-1.core.gz").write_bytes(b"another")
    dest = plan_destination(str(tmp_path), PROC, DumpKind.MINI, overwrite=False, extension=".core.gz", when=WHEN, host=HOST)
    assert os.path.basename(dest.final) == "My_Proc_4242_261126_070509-2.core.gz"
    assert first.read_bytes() == b"earlier dump"


def test_none_means_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dest = plan_destination(None, PROC, DumpKind.MINI, overwrite=False, extension=".core", when=WHEN, host=HOST)
    assert os.path.dirname(dest.final) == os.getcwd()
    assert dest.final.endswith(".core")


def test_missing_parent_is_an_error_and_not_created(tmp_path):
    with pytest.raises(InvalidDumpPath) as info:
        plan_destination(str(tmp_path / "nope" / "x.dmp"), PROC, DumpKind.MINI, overwrite=False, extension=".dmp", host=HOST)
    assert "does not exist" in str(info.value) and info.value.path.endswith("x.dmp")
    assert not (tmp_path / "nope").exists()


def test_trailing_separator_on_missing_directory(tmp_path):
    with pytest.raises(InvalidDumpPath):
        plan_destination(str(tmp_path / "nope") + os.sep, PROC, DumpKind.MINI, overwrite=False, extension=".dmp", host=HOST)


def test_existing_file_needs_overwrite(tmp_path):
    existing = tmp_path / "a.dmp"
    existing.write_bytes(b"keep")
    with pytest.raises(DumpExists) as info:
        plan_destination(str(existing), PROC, DumpKind.MINI, overwrite=False, extension=".dmp", host=HOST)
    assert info.value.path == str(existing) and "overwrite" in str(info.value)
    dest = plan_destination(str(existing), PROC, DumpKind.MINI, overwrite=True, extension=".dmp", host=HOST)
    assert dest.final == str(existing)
    assert existing.read_bytes() == b"keep"


def test_finalize_never_clobbers_without_overwrite(tmp_path):
    temp, final = tmp_path / "t.tmp", tmp_path / "f.dmp"
    temp.write_bytes(b"new")
    final.write_bytes(b"old")
    with pytest.raises(DumpExists):
        finalize_all([(str(temp), str(final))], overwrite=False, host=HOST)
    assert final.read_bytes() == b"old" and temp.exists()
    finalize_all([(str(temp), str(final))], overwrite=True, host=HOST)
    assert final.read_bytes() == b"new" and not temp.exists()


def test_finalize_moves_into_place(tmp_path):
    temp, final = tmp_path / "t.tmp", tmp_path / "f.dmp"
    temp.write_bytes(b"data")
    finalize_all([(str(temp), str(final))], overwrite=False, host=HOST)
    assert final.read_bytes() == b"data" and not temp.exists()


def test_a_temporary_name_is_the_prefix_16_lower_hex_digits_and_tmp_only():
    assert is_temp_name(".dumplib-0123456789abcdef.tmp")
    for other in (".dumplib-0123456789abcde.tmp", ".dumplib-0123456789ABCDEF.tmp", ".dumplib-0123456789abcdef.tmp\n",
                  "x.dumplib-0123456789abcdef.tmp", ".dumplib-0123456789abcdef.tmpx", ".dumplib-", "core.json"):
        assert not is_temp_name(other), other


def test_a_name_keeps_the_characters_unicodedata_calls_letters_and_digits():
    import unicodedata

    from dumplib.placement import _safe_name

    chars = [chr(c) for c in range(0x3400)] + ["\U0001d7d8", "\U0001f600", "\U000e0041", "\udcff"]
    kept = [ch for ch in chars if _safe_name("a" + ch + "a") == "a" + ch + "a"]
    expected = [ch for ch in chars if ch in "-_.+" or (ch.isalnum() and ch.isprintable() and unicodedata.category(ch)[0] in "LN")]
    assert kept == expected


def test_names_without_procdump_words_expand_as_the_token_pattern_does_without_compiling_it():
    # The pattern itself is the reference: expand_tokens and first_token_at skip it for a text holding
    # no ProcDump word, and must find exactly what it finds, left to right, values never rescanned.
    import random
    import re

    from dumplib import placement

    pattern = re.compile(placement._TOKEN)
    values = {"name": "{pid}", "pid": "4242", "date": "261126", "time": "070509", "kind": "mini", "event": "NONE"}
    pieces = ["{", "}", "{name}", "{pid}", "{date}", "{time}", "{kind}", "{event}", "{nam", "e}", "{{", "}}", "x", "/",
              "_", "é", "{NAME}", "{ pid}", "PI", "D", "PROCESS", "NAME", "HHMM", "SS"]
    rng = random.Random(16)
    for _ in range(5000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        m = pattern.search(text)
        assert placement.first_token_at(text) == (m.start() if m else None), text
        expected = pattern.sub(lambda m: values[m.group(1) or placement._PROCDUMP_TOKENS[m.group(2)]], text)
        if not placement._has_procdump_word(text):
            assert placement._expand_braced(text, values) == expected, text
    proc = ProcessInfo(pid=4242, name="PID{pid}")
    assert expand_tokens("/d/{name}-{pid}", proc, DumpKind.MINI, WHEN) == "/d/PID_pid_-4242"
    assert expand_tokens("/d/PROCESSNAME-{pid}", proc, DumpKind.MINI, WHEN) == "/d/PID_pid_-4242"
