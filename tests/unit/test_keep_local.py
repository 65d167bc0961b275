"""--keep-local-on-failure (issue #19): where the writer needs a seekable file (Windows) a dump to a URL is
written raw to a local volume first; when its upload fails the verified raw copy is kept only if the
caller asked, under a name people can find, and the error says where. The decision and the keeping run
on every OS here with a fake writer and a failing upload (no store, no Wine)."""
from __future__ import annotations

import types
from pathlib import Path
from typing import Any, Dict, List

import pytest

import dumplib
from dumplib.outputs import RawThenCompress, RemoteObject, keep_raw_after
from dumplib.remote import parse_url

RAW = b"MDMP" + b"\1" * 4096
#: The plan of the dump of process 42 (what RawThenCompress reads of it: the pid its errors name).
PLAN = types.SimpleNamespace(target=types.SimpleNamespace(pid=42))


@pytest.mark.parametrize("exc, verified, asked, remote, keep", [
    (dumplib.DumpFailed("x", reason="upload-failed"), True, True, True, True),
    (dumplib.DumpFailed("x", reason="cancelled"), True, True, True, True),
    (dumplib.DumpFailed("x", reason="upload-failed"), True, False, True, False),  # not asked: deleted
    (dumplib.DumpFailed("x", reason="upload-failed"), False, True, True, False),  # the raw dump is not verified
    (dumplib.DumpFailed("x", reason="upload-failed"), True, True, False, False),  # a local destination
    (KeyboardInterrupt(), True, True, True, False),  # nobody could be told where
    (dumplib.DumpExists("s3://bkt/x"), True, True, True, False),
])
def test_the_raw_copy_is_kept_only_when_asked_verified_and_the_upload_failed(exc, verified, asked, remote, keep):
    assert keep_raw_after(exc, verified, asked, remote) is keep


class _Writer:
    """A writer that needs a seekable file: writes RAW at the temporary name, verifies it (or fails to)."""

    def __init__(self, fail_verify: bool = False) -> None:
        self.fail_verify = fail_verify

    def write(self, plan: Any, path: str, options: Any) -> Any:
        Path(path).write_bytes(RAW)
        return types.SimpleNamespace(warnings=())

    def verify(self, path: str, plan: Any, report: Any) -> tuple:
        if self.fail_verify:
            raise dumplib.DumpFailed("the file read back is not what was written", reason="unverified")
        return ()


def _output(scratch: Path, keep: bool, failure: BaseException,
            url: str = "s3://bkt/prod/app_42_261205.dmp.zst") -> RawThenCompress:
    obj = RemoteObject(parse_url(url), store=None, overwrite=False,  # type: ignore[arg-type]
                       codec="zstd", level=1)

    def take_raw(raw: str, tick: Any, sidecar: Any, report: Any, pid: Any = None) -> Any:
        assert Path(raw).read_bytes() == RAW
        assert pid == 42  # an upload failure names the process (issue #19: it said pid null)
        raise failure

    obj.take_raw = take_raw  # type: ignore[method-assign]
    host = types.SimpleNamespace(mine=lambda st, path=None: True)
    return RawThenCompress(obj, str(scratch), host, keep_on_failure=keep)  # type: ignore[arg-type]


def _upload_failed() -> dumplib.DumpFailed:
    return dumplib.DumpFailed("uploading to s3://bkt/prod/app_42_261205.dmp.zst: the S3 endpoint could not be reached;"
                              " the upload was abandoned and nothing was committed", reason="upload-failed")


def test_a_failed_upload_keeps_the_verified_raw_dump_when_asked_and_says_where(tmp_path):
    with pytest.raises(dumplib.DumpFailed) as e:
        _output(tmp_path, True, _upload_failed()).write(_Writer(), PLAN, types.SimpleNamespace(tick=None))  # type: ignore[arg-type]
    kept = tmp_path / "app_42_261205.dmp"
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept.name]  # no temporary left beside it
    assert kept.read_bytes() == RAW
    assert e.value.kept == str(kept) and e.value.details()["kept"] == str(kept)
    assert f"kept at {kept}" in str(e.value) and f"kept at {kept}" in e.value.message
    assert e.value.reason == "upload-failed"


def test_a_kept_copy_named_by_a_hostile_url_stays_one_harmless_file_in_scratch(tmp_path):
    """The object's name is whatever the URL (or a {name} token, the process's own choice) made it: the
    kept copy's local name keeps only letters, digits and -_.+, and never names a device."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(dumplib.DumpFailed) as e:
        _output(scratch, True, _upload_failed(), "s3://bkt/p/..CON:evil<|>.dmp.zst").write(
            _Writer(), PLAN, types.SimpleNamespace(tick=None))  # type: ignore[arg-type]
    assert [p.name for p in scratch.iterdir()] == ["CON_evil___.dmp"]
    assert e.value.kept == str(scratch / "CON_evil___.dmp")


def test_a_kept_copy_never_replaces_a_file(tmp_path):
    (tmp_path / "app_42_261205.dmp").write_bytes(b"someone else's")
    with pytest.raises(dumplib.DumpFailed) as e:
        _output(tmp_path, True, _upload_failed()).write(_Writer(), PLAN, types.SimpleNamespace(tick=None))  # type: ignore[arg-type]
    assert (tmp_path / "app_42_261205.dmp").read_bytes() == b"someone else's"
    assert e.value.kept == str(tmp_path / "app_42_261205-1.dmp") and Path(e.value.kept).read_bytes() == RAW


@pytest.mark.parametrize("keep, writer, failure", [
    (False, _Writer(), _upload_failed()),  # not asked
    (True, _Writer(fail_verify=True), _upload_failed()),  # the raw dump did not verify: never kept
    (True, _Writer(), KeyboardInterrupt()),  # interrupted: nobody could be told where
])
def test_otherwise_nothing_is_left(tmp_path, keep, writer, failure):
    with pytest.raises((dumplib.DumpFailed, KeyboardInterrupt)) as e:
        _output(tmp_path, keep, failure).write(writer, PLAN, types.SimpleNamespace(tick=None))  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
    assert getattr(e.value, "kept", None) is None


def test_the_cli_option_reaches_create_dump(monkeypatch):
    from dumplib_cli.app import main

    seen: List[Dict[str, Any]] = []

    def record(target: Any, path: Any, kind: Any, **options: Any) -> None:
        seen.append(options)
        raise KeyboardInterrupt

    monkeypatch.setattr(dumplib, "create_dump", record)
    for argv, want in ((["dump", "1234", "s3://bkt/", "--keep-local-on-failure"], True), (["dump", "1234", "s3://bkt/"], False)):
        with pytest.raises(SystemExit):
            main(argv)
        assert seen.pop()["keep_local_on_failure"] is want


def test_create_dumps_option_reaches_the_raw_then_upload_output(tmp_path, monkeypatch):
    import tempfile

    from dumplib import api
    from dumplib._switch import current

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    real = current()
    seekable = types.SimpleNamespace(streams=False, host=real.host)  # a writer that needs a seekable file
    obj = RemoteObject(parse_url("s3://bkt/x.dmp"), store=None, overwrite=False, codec=None, level=0)  # type: ignore[arg-type]
    for asked in (True, False):
        opts = types.SimpleNamespace(min_free=0, keep_local_on_failure=asked)
        out = api._for_platform(seekable, obj, opts)  # type: ignore[arg-type]
        assert isinstance(out, RawThenCompress) and out.keep_on_failure is asked


@pytest.mark.parametrize("name, expected", [
    ("app_42.dmp", "app_42.dmp"), ("..", "dump"), ("../../etc/passwd", "_.._etc_passwd"), ("C:evil.dmp", "C_evil.dmp"),
    ("a\\b.dmp", "a_b.dmp"), (".hidden.dmp", "hidden.dmp"), ("-rf.dmp", "rf.dmp"), ("CON.dmp", "_CON.dmp"),
    ("lpt1", "_lpt1"), ("名前.dmp", "__.dmp"), ("x" * 300, "x" * 200), ("a*?<>|\"b", "a______b")])
def test_a_kept_copy_takes_a_harmless_local_name_from_the_objects_name(name, expected):
    from dumplib.outputs import local_name

    assert local_name(name) == expected
