"""Exception filters as ProcDump users write them (-e, -e 1, -f, -fx): by code or by name, include
and exclude, and first chance without the messages that are not faults. Pure logic: any OS."""
import pytest

from cli.watch import _triggers
from dumplib import ExceptionRaised, InvalidArgument
from dumplib.triggers import exception_code

AV, STACK, CPP, CLR = 0xC0000005, 0xC00000FD, 0xE06D7363, 0xE0434352
THREAD_NAME, DBG_PRINT, DBG_PRINT_WIDE = 0x406D1388, 0x40010006, 0x4001000A


@pytest.mark.parametrize("text, code", [
    ("AccessViolation", AV), ("access_violation", AV), ("EXCEPTION_ACCESS_VIOLATION", AV),
    ("StackOverflow", STACK), ("EXCEPTION_STACK_OVERFLOW", STACK), ("CppEH", CPP), ("cpp", CPP),
    ("0xC0000005", AV), ("3221225477", AV), ("STATUS_STACK_BUFFER_OVERRUN", 0xC0000409),
    ("DBG_PRINTEXCEPTION_C", DBG_PRINT), ("DBG_PRINTEXCEPTION_WIDE_C", DBG_PRINT_WIDE), ("ThreadName", THREAD_NAME),
    ("EXCEPTION_INT_DIVIDE_BY_ZERO", 0xC0000094), ("IntDivideByZero", 0xC0000094),
])
def test_codes_and_names_as_users_write_them(text, code):
    assert exception_code(text) == code


def test_an_unknown_name_is_refused_with_the_names_to_use():
    with pytest.raises(InvalidArgument) as caught:
        exception_code("AccessViolaton")
    assert "AccessViolation" in str(caught.value) and "CppEH" in str(caught.value)


def test_include_and_exclude():
    only = ExceptionRaised(["AccessViolation", "StackOverflow"])
    assert only.matches(AV, True) and only.matches(STACK, False) and not only.matches(CPP, True)
    but = ExceptionRaised(exclude=["CppEH", CLR])
    assert but.matches(AV, True) and not but.matches(CPP, True) and not but.matches(CPP, False)
    assert not but.matches(CLR, False)


def test_first_chance_skips_thread_names_and_debug_output_unless_they_are_named():
    anything = ExceptionRaised(first_chance=True)
    for code in (THREAD_NAME, DBG_PRINT, DBG_PRINT_WIDE):
        assert not anything.matches(code, True), hex(code)
    assert anything.matches(AV, True) and anything.matches(0xE0000001, True)
    named = ExceptionRaised(["ThreadName", "DBG_PRINTEXCEPTION_C"], first_chance=True)
    assert named.matches(THREAD_NAME, True) and named.matches(DBG_PRINT, True) and not named.matches(AV, True)


def test_second_chance_only_ignores_first_chance():
    unhandled = ExceptionRaised(first_chance=False)
    assert not unhandled.matches(AV, True) and unhandled.matches(AV, False)


def test_the_cli_takes_names_and_an_exclude_list():
    (trigger,) = _triggers(None, False, False, 0, None, "default", None, None, "AccessViolation,0xC00000FD", True,
                           None, False, "CppEH")
    assert trigger.codes == {AV, STACK} and trigger.exclude == {CPP} and trigger.first_chance
    (trigger,) = _triggers(None, False, False, 0, None, "default", None, None, None, False, None, False, "CppEH")
    assert trigger.codes is None and trigger.exclude == {CPP}


def test_dump_service_names_a_service_target_on_the_command_line(tmp_path):
    """`dumplib dump --service NAME PATH` is `dumplib dump svc:NAME PATH`: an unknown service is
    ProcessNotFound (exit 3) naming it; off Windows, saying services are Windows'."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ)
    if sys.platform != "win32":  # this tree's CLI, not an installed one (Windows runs find it installed or linked)
        (tmp_path / "dumplib_cli").symlink_to(root / "cli", target_is_directory=True)
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(root)])
    for args in (["--service", "NoSuchDumplibService", str(tmp_path)], ["svc:NoSuchDumplibService", str(tmp_path)]):
        done = subprocess.run([sys.executable, "-m", "dumplib_cli", "dump", *args, "--json"], capture_output=True,
                              text=True, env=env, timeout=120)
        err = json.loads(done.stdout)["error"]
        assert done.returncode == 3 and err["target"] == "svc:NoSuchDumplibService", done
        expected = "no service is named" if sys.platform == "win32" else "Windows service"
        assert expected in err["message"], err
