"""The postmortem handler says what it did for each crash in the system log, as systemd-coredump does
in the journal: one line per crash, at LOG_INFO for a dump written and LOG_WARNING for a refusal.

The test is the system logger: it binds /dev/log (the socket syslog(3) and journald's syslog bridge
listen on) for its duration, so it needs a machine where nothing else holds it (CI's has none)."""
from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Iterator, List

import pytest

from helpers import private_state, require
from test_postmortem import crash, crasher, dumps, installed, log_records  # noqa: F401 - fixtures

pytestmark = pytest.mark.linux

DEV_LOG = "/dev/log"
LOG_DAEMON = 3 << 3


@pytest.fixture()
def system_log() -> Iterator[socket.socket]:
    require(os.geteuid() == 0, "binding /dev/log needs root")
    if os.path.lexists(DEV_LOG):
        pytest.skip("a system logger holds /dev/log here; the handler's lines go to it (journalctl -t dumplib-postmortem)")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(DEV_LOG)
        os.chmod(DEV_LOG, 0o666)
        sock.settimeout(60)
        yield sock
    finally:
        sock.close()
        os.unlink(DEV_LOG)


def _lines(sock: socket.socket, n: int) -> List[str]:
    return [sock.recv(65536).decode("utf-8", "replace") for _ in range(n)]


def test_each_crash_is_one_line_in_the_system_log_saying_what_was_done(system_log: socket.socket, crasher: Path,
                                                                      dumps: Path, tmp_path: Path) -> None:
    state = private_state(tmp_path)
    with installed(state, dumps, "--max-per", "10:1", "--min-free", "1M"):
        first = crash(crasher, "1")
        second = crash(crasher, "1")
        records = log_records(state, wait_for=2)
        lines = _lines(system_log, 2)
    del first, second
    assert [r["outcome"] for r in records] == ["written", "rate-limited"], records
    written, limited = lines
    # <PRI>: facility daemon, severity info (6) for a dump written, warning (4) for a refusal.
    assert written.startswith(f"<{LOG_DAEMON | 6}>") and limited.startswith(f"<{LOG_DAEMON | 4}>"), lines
    for line, record in zip(lines, records):
        assert re.search(rf"dumplib-postmortem\[\d+\]: process {record['pid']} ", line), line
        assert "\n" not in line.rstrip("\n"), line  # one line, whatever the crasher is named
    assert f"wrote {records[0]['path']}" in written
    assert "rate-limited" in limited
