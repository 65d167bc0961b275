"""The postmortem handler's env file and directory checks (#19), read as the handler reads them at a crash.

The e2e tests (tests/e2e_linux/test_postmortem_egress.py) run them through real crashes; the parsing
edge cases and the directory walk are pinned here, with files made for the purpose, as root.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("the Linux postmortem handler", allow_module_level=True)
if os.geteuid() != 0:
    pytest.skip("the env file must be root's: run as root (CI does)", allow_module_level=True)

from dumplib._linux.coredump_handler import Refused, read_env_file, root_only_dir


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def test_one_pair_of_quotes_around_a_value_is_taken_off_and_nothing_inside_is_interpreted(tmp_path: Path) -> None:
    f = _write(tmp_path / "e.env", b'AWS_ACCESS_KEY_ID="AKIA1"\n'
                                   b"AWS_SECRET_ACCESS_KEY='s3cr3t $HOME # not a comment'\n"
                                   b'AWS_SESSION_TOKEN="\n'
                                   b"AWS_REGION='eu-west-1\"\n"
                                   b'AWS_DEFAULT_REGION=""\n'
                                   b'AWS_ENDPOINT_URL="http://a\\"b"\r\n')
    assert read_env_file(str(f)) == {
        "AWS_ACCESS_KEY_ID": "AKIA1",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t $HOME # not a comment",
        "AWS_SESSION_TOKEN": '"',  # one quote is not a pair
        "AWS_REGION": "'eu-west-1\"",  # nor are two different ones
        "AWS_DEFAULT_REGION": "",
        "AWS_ENDPOINT_URL": 'http://a\\"b',  # no escapes
    }


@pytest.mark.parametrize("separator", ["\x85", "\u2028", "\v", "\f", "\x1c"])
def test_a_line_ends_at_a_newline_only(tmp_path: Path, separator: str) -> None:
    """str.splitlines() would end a line at these too, and a second NAME= hidden inside a value would win."""
    f = _write(tmp_path / "e.env", f"AWS_REGION=a{separator}AWS_REGION=evil\n".encode())
    assert read_env_file(str(f)) == {"AWS_REGION": f"a{separator}AWS_REGION=evil"}


def test_a_name_outside_the_list_is_refused_without_repeating_the_line(tmp_path: Path) -> None:
    f = _write(tmp_path / "e.env", b"AWS_REGION=x\nLD_PRELOAD=/tmp/secret-evil.so\n")
    with pytest.raises(Refused) as refused:
        read_env_file(str(f))
    assert "line 2" in refused.value.why and "secret-evil" not in refused.value.why


def test_the_directory_walk_refuses_a_symlink_or_a_parent_others_can_write(tmp_path: Path) -> None:
    real = tmp_path / "a" / "b"
    real.mkdir(parents=True, mode=0o700)
    root_only_dir(str(real))  # root's all the way (pytest's directories; /tmp is sticky)
    (tmp_path / "link").symlink_to(tmp_path / "a")
    with pytest.raises(Refused) as linked:
        root_only_dir(str(tmp_path / "link" / "b"))
    assert "link" in linked.value.why
    (tmp_path / "a").chmod(0o777)  # the parent, not the leaf
    try:
        with pytest.raises(Refused) as open_parent:
            root_only_dir(str(real))
        assert str(tmp_path / "a") in open_parent.value.why
    finally:
        (tmp_path / "a").chmod(0o700)
