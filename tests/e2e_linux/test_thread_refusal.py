"""dumplib in a cgroup at its pids limit: every thread dumplib starts, refused by the kernel (EAGAIN from
clone), is a DumpFailed reason no-resources naming what could not start, not a RuntimeError traceback,
and a target already touched is let go.

Each of dumplib's thread-starting parts is tried alone, in a process whose pids cgroup leaves room for no
task beyond its one thread (tests/linuxrig.py pids_cgroup_v1): the kernel's own refusal, nothing mocked.
A whole dump at every limit is test_fuse_reads.py's test_at_a_pids_limit_...; which thread a whole dump
meets first varies with the moment a finished worker's task goes, so each part is pinned down here."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from linuxrig import assert_running_untraced, pids_cgroup_v1, proc_status, python_at_pids_limit, sha256sum

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux: cgroups")

PARTS = r"""
import json, os, signal, sys, time
import dumplib
from dumplib._bounded import call_within
from dumplib._egress.pool import DaemonPool
from dumplib._hashing import FollowingHasher
from dumplib._linux.ptrace.stopper import StoppedProcess
from dumplib._linux.signalwatch import SignalWatcher
from dumplib._linux.snapshot.remote import RemoteStoppedProcess

from dumplib._linux import host
from dumplib._linux.proc.pidfiles import command_line

pid, scratch = int(sys.argv[1]), sys.argv[2]
# A file of ours in the host's registry (as a dump's temporary is), for the look at placed files below.
mine = os.path.join(scratch, "mine")
fd = os.open(mine, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
host._lock_while_alive(mine, fd)
# And a dump's temporary (flocked on a descriptor of the host's), which its failure path removes below.
gone = os.path.join(scratch, ".dumplib-gone.tmp")
os.close(host.create_exclusive(gone))
print("ready", flush=True)
sys.stdin.readline()


def alone():  # a finished worker's task lingers a moment after it said it was done
    deadline = time.monotonic() + 10
    while len(os.listdir("/proc/self/task")) > 1:
        assert time.monotonic() < deadline, os.listdir("/proc/self/task")
        time.sleep(0.01)


def stopped():
    with StoppedProcess(pid):
        pass


def watched():
    w = SignalWatcher(pid, [dumplib.SignalReceived("USR1")], fire=lambda *a: None)
    try:
        w.start()
    finally:
        w.stop()


def rows():
    listed = [p for p in dumplib.processes() if p.pid == pid]
    assert listed and listed[0].rss_bytes is None, listed  # its row, its figures unknown ("?")
    return "a row"


def sampled():  # of the test's own process, whose short name needs no command line to be found
    events = []
    got = dumplib.watch(os.getppid(), dumplib.MemoryAbove(1 << 40, measure="pss"), sample_every=0.1, timeout=1.0,
                        on_event=lambda e: events.append(e.event))
    assert got == [] and events[-1] == "timeout", events
    return "watched to its timeout"


def snapshot_helper():
    with RemoteStoppedProcess(pid):
        pass


def launched(trigger):
    def launch():
        dumplib.watch(launch=["true"], triggers=trigger, timeout=5.0)
    return launch


def hook_ran():  # the command's --exec after a dump (cli/watch.py): said, and the watch goes on
    import contextlib, io
    from dumplib_cli.watch import _Printer
    r = dumplib.DumpResult(path=os.path.join(scratch, "a.core"), pid=pid, process_name="x", kind="mini", flags=None,
                           size=0, seconds=0.0, backend="linux")
    said = io.StringIO()
    with contextlib.redirect_stdout(said):
        _Printer(as_json=True, exec_cmd="true")._exec(r)
    return json.loads(said.getvalue())["event"]


def by_name():
    dumplib.resolve_target(os.path.basename(sys.argv[3]))


def by_pid():  # its name only a label: cut short (comm), not a reason to refuse
    return dumplib.resolve_target(pid).name


def watched_by_name():
    events = []
    got = dumplib.watch(all=os.path.basename(sys.argv[3]), triggers=dumplib.MemoryAbove(1 << 40), sample_every=0.1,
                        timeout=1.0, on_event=lambda e: events.append((e.event, e.message)))
    said = [m for e, m in events if e == "failed"]
    assert got == [] and events[-1][0] == "timeout" and len(said) == 1 and "pids limit" in said[0], events
    return "said once, watched to its timeout"


def zstd_after_an_empty_write():  # libzstd starts its workers at its first byte, not at an empty write
    import zstandard
    from dumplib.compression import _Compressor
    c = _Compressor("zstd", 1)
    data = os.urandom(1 << 16) * 16
    frame = c.compress(b"") + c.compress(data) + c.flush()
    assert zstandard.ZstdDecompressor().decompressobj().decompress(frame) == data
    return "the same bytes"


def looked():
    host._let_go_of_gone()
    return "looked"


def removed():  # a failed dump's temporary removed (outputs._discard): its lock's descriptor closed with it
    from dumplib.outputs import _discard
    kept = host._live_files[gone][0]
    _discard(gone, host.LinuxHost(), dumplib.DumpFailed("the dump failed", reason="no-resources"))
    still = gone in host._live_files or os.path.exists(f"/proc/self/fd/{kept}")
    return ("its lock kept" if still else "its lock let go") + (", the file left" if os.path.exists(gone) else "")


out = {}
for name, part in [("bounded read", lambda: call_within(lambda: 1, 5.0)), ("stop", stopped),
                   ("signal watch", watched), ("hasher", lambda: FollowingHasher(os.path.join(scratch, "h"))),
                   ("upload threads", lambda: DaemonPool(2, "up", lambda: None)),
                   ("snapshot helper", snapshot_helper),
                   ("launch, held", launched(dumplib.SignalReceived("USR1"))),
                   ("launch", launched(dumplib.CpuAbove(99))),
                   ("--exec hook", hook_ran),
                   # best-effort reads: no thread to read in is "unknown", as a stuck read is
                   ("command line", lambda: repr(command_line(pid))), ("ps", rows), ("name lookup", by_name), ("pid lookup", by_pid),
                   ("watch --all", watched_by_name), ("pss sample", sampled),
                   ("host's look", looked), ("zstd", zstd_after_an_empty_write),
                   ("temporary removed", removed)]:
    alone()
    fds = sorted(os.listdir("/proc/self/fd"))
    try:
        out[name] = ["started", part()]
    except dumplib.DumpFailed as e:
        out[name] = [e.reason, e.message]
    except BaseException as e:
        out[name] = ["raised", repr(e)]
    import gc; gc.collect()
    leaked = sorted(set(os.listdir("/proc/self/fd")) - set(fds))
    if leaked:
        out[name].append("leaked " + " ".join(os.readlink(f"/proc/self/fd/{n}") for n in leaked if n.isdigit()))
print(json.dumps(out), flush=True)
"""


def test_each_thread_dumplib_starts_is_refused_typed_and_the_target_is_let_go(tmp_path: Path) -> None:
    named = tmp_path / "dumplib-long-target-name"  # longer than comm's 15 bytes: its name needs its cmdline
    named.symlink_to(sys.executable)
    target = subprocess.Popen([str(named), "-c", "import time; time.sleep(300)"])
    try:
        got = python_at_pids_limit(PARTS, [str(target.pid), str(tmp_path), str(named)], room=0)
        # The command line of a process whose name is cut short (comm's 15 bytes), hence a lookup of a
        # name it may be the start of: refused, never taken as "gone" (a running process "not found").
        # A listing (ps) and a pid's label take the cut-short name.
        refused = {"bounded read", "stop", "signal watch", "hasher", "upload threads", "snapshot helper",
                   "launch, held", "launch", "command line", "name lookup"}
        unknown = {"watch --all": "said once, watched to its timeout", "pss sample": "watched to its timeout",
                   "host's look": "looked", "--exec hook": "exec-failed", "zstd": "the same bytes", "ps": "a row",
                   "pid lookup": "dumplib-long-ta",
                   # its lock's descriptor closed at once, not left for a look that needs a thread (the
                   # loaded CI's leaked descriptor: a dump refused its stop after its temporary existed)
                   "temporary removed": "its lock let go"}
        assert set(got) == refused | set(unknown), got
        for name in refused:
            assert len(got[name]) == 2, (name, got[name])  # a third entry: the descriptors it left open
            reason, message = got[name]
            assert reason == "no-resources", (name, reason, message)
            assert message.startswith("could not start ") and "pids limit" in message, (name, message)
        for name, carried_on in unknown.items():
            assert got[name] == ["started", carried_on], (name, got[name])
        assert_running_untraced(target.pid)
    finally:
        target.kill()
        target.wait()


WHOLE = r"""
import json, os, sys, time
import dumplib
pid, path, codec = int(sys.argv[1]), sys.argv[2], sys.argv[3] or None
print("ready", flush=True)
sys.stdin.readline()
try:
    r = dumplib.create_dump(pid, path, "full", compress=codec, sidecar=False, space_check=False)
    out = {"written": r.path}
except dumplib.DumpError as e:
    out = {"type": type(e).__name__, "reason": getattr(e, "reason", None), "message": e.message}
except BaseException as e:
    out = {"type": "raised", "message": repr(e)}
print(json.dumps(out), flush=True)
"""


def _whole_dump(pid: int, path: Path, codec: str, room: int) -> dict:  # type: ignore[type-arg]
    return python_at_pids_limit(WHOLE, [str(pid), str(path), codec], room)


def _stopped_untraced(pid: int) -> None:
    status = proc_status(pid)
    assert status["State"][0] == "T" and status["TracerPid"] == "0", status  # left as it was: stopped, no tracer


def _first_room_written(pid: int, directory: Path, codec: str) -> "tuple[int, Path]":
    for room in range(16):
        path = directory / f"r{room}.core{'.zst' if codec else ''}"
        got = _whole_dump(pid, path, codec, room)
        if "written" in got:
            return room, Path(got["written"])
        assert got["type"] == "DumpFailed" and got["reason"] == "no-resources", (codec, room, got)
        assert sorted(directory.iterdir()) == [], (codec, room, sorted(directory.iterdir()))
        _stopped_untraced(pid)
    raise AssertionError(f"{codec or 'raw'}: never written with up to 15 tasks to spare")


def test_zstd_at_a_pids_limit_compresses_on_one_thread_rather_than_fail(tmp_path: Path) -> None:
    """zstd starts a worker thread per CPU at its first compress(); refused (a pids limit), libzstd said
    "Allocation error" and the dump failed with the codec's own ZstdError, a traceback. Now the frame is
    made on dumplib's thread instead: a zstd dump is written wherever an uncompressed one is, the
    first limit where each is written being the same (within one task: a finished worker's task may
    linger). The target is SIGSTOPped throughout, so both dumps see the same memory: the zstd core,
    decompressed by zstd itself, is the uncompressed core byte for byte (nothing of the refused first
    call lost or doubled, which zstd -t alone would not see)."""
    target = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        target.send_signal(signal.SIGSTOP)
        (tmp_path / "raw").mkdir()
        (tmp_path / "zst").mkdir()
        raw_room, raw = _first_room_written(target.pid, tmp_path / "raw", "")
        zst_room, zst = _first_room_written(target.pid, tmp_path / "zst", "zstd")
        print(f"written from {raw_room} task(s) to spare uncompressed, {zst_room} with zstd")
        assert zst_room <= raw_room + 1, (raw_room, zst_room)
        subprocess.run(["zstd", "-q", "-d", str(zst), "-o", str(tmp_path / "unzst.core")], check=True)
        assert sha256sum(tmp_path / "unzst.core") == sha256sum(raw), "the zstd core is not the raw core"
        _stopped_untraced(target.pid)
    finally:
        target.kill()
        target.wait()


WATCHER = r"""
import json, sys
import dumplib
pid, out = int(sys.argv[1]), sys.argv[2]
dumplib.watch(pid, dumplib.SignalReceived("USR1"), path=out, kind="mini", count=1, interval=0, timeout=120,
              on_event=lambda e: print(json.dumps(e.to_dict(), default=str), flush=True))
"""
GREETER = ("import signal, time\nsignal.signal(signal.SIGUSR1, lambda *a: print('usr1', flush=True))\n"
           "print('ready', flush=True)\nwhile True: time.sleep(1)\n")


def _where(*pids: int) -> str:
    """Each thread of *pids*: its state and where it waits (for a failure's message)."""
    said = []
    for pid in pids:
        for tid in sorted(os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}") else []):
            try:
                name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
                state = proc_status(int(tid)).get("State", "?")
                wchan = Path(f"/proc/{pid}/task/{tid}/wchan").read_text().strip()
            except OSError:
                continue
            said.append(f"{pid}/{tid} {name} {state} in {wchan or '-'}")
    return "; ".join(said)


class _Lines:
    """The lines of a child's pipe, each within a bound (a target left stopped must fail, not hang). Read
    from the descriptor itself: select() on a buffered stream's descriptor cannot see a line that came in
    the same read as the one before and waits in its buffer (a watcher whose `fired` and `failed` came
    together looked silent for 30 s once, under load)."""

    def __init__(self, stream, *watched: int) -> None:  # type: ignore[no-untyped-def]
        self.fd = stream.fileno()
        self.rest = b""
        self.watched = watched

    def next(self, seconds: float = 30.0) -> str:
        deadline = time.monotonic() + seconds
        while b"\n" not in self.rest:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"no line within {seconds:g} s; {_where(*self.watched)}"
            chunk = os.read(self.fd, 65536)
            if not chunk:  # end of file: what is left, as readline() gives it
                line, self.rest = self.rest, b""
                return line.decode()
            self.rest += chunk
        line, _, self.rest = self.rest.partition(b"\n")
        return line.decode() + "\n"


def test_a_hand_over_the_limit_refuses_loses_that_dump_not_the_target_nor_the_watch(tmp_path: Path) -> None:
    """`watch --signal USR1` while its cgroup is, for a moment, at its pids limit: the signal's hand-over
    cannot start the dump's thread. The target is let go with its signal delivered (its handler runs),
    untraced; the watch reports that dump failed (no-resources) and goes on; with room again, the next
    USR1 is dumped. (A hand-over that kept the target stopped when its thread could not start, or
    joined a thread that never started, failed here: the reviewer's plants.)"""
    target = subprocess.Popen([sys.executable, "-c", GREETER], stdout=subprocess.PIPE, text=True)
    watcher = subprocess.Popen([sys.executable, "-c", WATCHER, str(target.pid), str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert target.stdout is not None and watcher.stdout is not None
        from_target, from_watcher = _Lines(target.stdout), _Lines(watcher.stdout, watcher.pid, target.pid)
        assert from_target.next().strip() == "ready"

        def next_event(*names: str) -> dict:  # type: ignore[type-arg]
            while True:
                line = from_watcher.next()
                assert line, watcher.stderr.read() if watcher.stderr else ""
                event = json.loads(line)
                if event["event"] in names:
                    return event  # type: ignore[no-any-return]

        next_event("watching")
        with pids_cgroup_v1(watcher.pid, room=50) as group:
            (group / "pids.max").write_text((group / "pids.current").read_text().strip())  # no room now
            subprocess.run(["kill", "-USR1", str(target.pid)], check=True)
            failed = next_event("failed", "dumped")
            assert failed["event"] == "failed", failed
            assert failed["error"]["reason"] == "no-resources", failed
            assert "was let go and its SIGUSR1 delivered" in failed["message"], failed  # what became of it
            assert from_target.next().strip() == "usr1"  # delivered: the handler ran
            status = proc_status(target.pid)  # running on, watched again (traced by the watcher alone)
            assert status["State"][0] in "RS", status
            assert status["TracerPid"] in os.listdir(f"/proc/{watcher.pid}/task"), status  # one of its threads
            (group / "pids.max").write_text("max")
            subprocess.run(["kill", "-USR1", str(target.pid)], check=True)
            dumped = next_event("dumped", "failed")
            assert dumped["event"] == "dumped", dumped
            assert from_target.next().strip() == "usr1"
            assert watcher.wait(60) == 0, watcher.stderr.read() if watcher.stderr else ""
        print(failed["message"])
        assert_running_untraced(target.pid)
        assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".json")] == \
            [Path(dumped["result"]["path"]).name]  # the one dump, nothing of the failed one
    finally:
        for p in (watcher, target):
            if p.poll() is None:
                p.kill()
            p.wait()
