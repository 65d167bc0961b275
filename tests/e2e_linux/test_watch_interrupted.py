"""A watch interrupted while it holds a process for a dump at a signal (watch --signal): the target is let
go at once, the signal it was about to receive is delivered as it was sent, the partial file goes, the
watcher says what was kept, and a second signal does not cut any of that short.

The dump is slowed by its compression (gzip level 9, which compresses each chunk as it is written; zstd's
worker threads take a whole small dump at once and spend their time in the final flush), not by a large
target, so the window in which the interruption lands is wide on any machine; nothing here times the machine: the checks are the target's
state and tracer in /proc, its own record of the signal it received, and the files in the directory.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

import dumplib
from helpers import leftovers
from linuxrig import build_source, proc_status, signal_defaults

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
#: MiB the target fills: gzip level 9 takes seconds over it, checking for the interruption every 4 MiB.
TARGET_MIB = "32"


@pytest.fixture(scope="module")
def handover_exe(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    return build_source(tmp_path_factory.mktemp("handover"), HERE / "handover_target.c", name="dlw-handover")


@pytest.fixture(scope="module")
def cli_path(tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    """A PYTHONPATH under which `python -m dumplib_cli` is this tree's cli/ (not an installed copy)."""
    where = tmp_path_factory.mktemp("clipath")
    (where / "dumplib_cli").symlink_to(REPO / "cli")
    return os.pathsep.join([str(REPO), str(where), os.environ.get("PYTHONPATH", "")])


@contextlib.contextmanager
def target(exe: Path, side: Path) -> Iterator[subprocess.Popen]:  # type: ignore[type-arg]
    proc = subprocess.Popen([str(exe), str(side), TARGET_MIB], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        json.loads(proc.stdout.readline())
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.wait()


def state_of(pid: int) -> Tuple[str, str]:
    st = proc_status(pid)
    return st["State"], st["TracerPid"]


def wait_for(what, patience: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + patience
    while not what():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.01)


def handed_over_and_writing(pid: int, outdir: Path) -> bool:
    """The dump at the signal is under way: its temporary exists and the target is stopped for it."""
    return bool(leftovers(outdir)) and state_of(pid)[0][0] in "Tt"


def delivered(side: Path) -> List[str]:
    return side.read_text().splitlines() if side.exists() else []


@pytest.mark.parametrize("signals", [(signal.SIGINT,), (signal.SIGTERM,), (signal.SIGHUP,),
                                     (signal.SIGINT, signal.SIGTERM)],
                         ids=["sigint", "sigterm", "sighup", "sigint-then-sigterm"])
def test_an_interrupted_watch_lets_the_target_go_delivers_its_signal_and_keeps_nothing(
        handover_exe: Path, cli_path: str, tmp_path: Path, outdir: Path, signals: Tuple[int, ...]) -> None:
    side = tmp_path / "handler.txt"
    with target(handover_exe, side) as proc:
        cli = subprocess.Popen([sys.executable, "-m", "dumplib_cli", "watch", str(proc.pid), str(outdir),
                                "--signal", "USR1", "--kind", "full", "--compress", "gzip", "--compress-level", "9",
                                "--max-pause", "off", "--no-space-check", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=cli_path), preexec_fn=signal_defaults())
        try:
            assert cli.stdout is not None
            assert json.loads(cli.stdout.readline())["event"] == "watching"
            os.kill(proc.pid, signal.SIGUSR1)
            wait_for(lambda: handed_over_and_writing(proc.pid, outdir))
            for sig in signals:  # a second signal at once: it lands in the middle of the cleanup
                cli.send_signal(sig)
            out, err = cli.communicate(timeout=120)
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.wait()
        assert cli.returncode == 128 + signals[0], (cli.returncode, out, err)
        # Let go and untraced, its group-stop ended: it runs (sleeps in pause()), as it did before.
        wait_for(lambda: state_of(proc.pid)[1] == "0" and state_of(proc.pid)[0][0] in "RS", 10)
        # The signal it was about to receive reached its handler once, as sent (by this test, SI_USER).
        wait_for(lambda: delivered(side), 10)
        assert delivered(side) == [f"signo={int(signal.SIGUSR1)} code=0 pid={os.getpid()}"]
        # Nothing left: no dump, no partial file; and the watcher says so, not "nothing was left behind".
        assert sorted(p.name for p in outdir.iterdir()) == []
        events = [json.loads(line) for line in out.splitlines()]
        assert [e["event"] for e in events][-2:] == ["abandoned", "stopped"], events
        assert events[-2]["error"]["reason"] == "cancelled"
        assert "no dump was kept" in events[-1]["message"] and "abandoned" in events[-1]["message"]
        # It still gets its signals, untraced.
        os.kill(proc.pid, signal.SIGUSR1)
        wait_for(lambda: len(delivered(side)) == 2, 10)


def test_keyboard_interrupt_in_the_library_mid_dump_leaves_the_target_running_untraced(
        handover_exe: Path, tmp_path: Path, outdir: Path) -> None:
    """In-process: this interpreter lives on after the interrupt, so the kernel's detach at exit cannot hide
    a target the watch left traced or stopped."""
    side = tmp_path / "handler.txt"
    with target(handover_exe, side) as proc:
        events: List[dumplib.WatchEvent] = []

        def interrupt_when_writing() -> None:
            wait_for(lambda: handed_over_and_writing(proc.pid, outdir))
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # type: ignore[arg-type]

        def on_event(e: dumplib.WatchEvent) -> None:
            events.append(e)
            if e.event == "watching":
                os.kill(proc.pid, signal.SIGUSR1)
                threading.Thread(target=interrupt_when_writing, daemon=True).start()

        with pytest.raises(KeyboardInterrupt):
            dumplib.watch(proc.pid, dumplib.SignalReceived("USR1"), path=outdir, kind="full", compress="gzip",
                          compress_level=9, max_pause=None, space_check=False, timeout=300, on_event=on_event)
        state, tracer = state_of(proc.pid)
        assert tracer == "0" and state[0] in "RS", (state, tracer)
        assert not [t for t in threading.enumerate() if t.name.startswith("dumplib-")], "a watcher thread lives on"
        wait_for(lambda: delivered(side), 10)
        assert delivered(side) == [f"signo={int(signal.SIGUSR1)} code=0 pid={os.getpid()}"]
        assert leftovers(outdir) == [] and list(outdir.iterdir()) == []
        assert [e.event for e in events][-1] == "abandoned"


def test_keyboard_interrupt_in_the_library_while_idle_leaves_the_target_untraced(
        handover_exe: Path, tmp_path: Path, outdir: Path) -> None:
    side = tmp_path / "handler.txt"
    with target(handover_exe, side) as proc:
        def on_event(e: dumplib.WatchEvent) -> None:
            if e.event == "watching":
                assert state_of(proc.pid)[1] != "0"  # traced by the watch now
                threading.Timer(0.2, lambda: signal.pthread_kill(threading.main_thread().ident,  # type: ignore[arg-type]
                                                                 signal.SIGINT)).start()

        with pytest.raises(KeyboardInterrupt):
            dumplib.watch(proc.pid, dumplib.SignalReceived("USR1"), path=outdir, timeout=300, on_event=on_event)
        state, tracer = state_of(proc.pid)
        assert tracer == "0" and state[0] in "RS", (state, tracer)
        os.kill(proc.pid, signal.SIGUSR1)
        wait_for(lambda: delivered(side), 10)
        assert delivered(side) == [f"signo={int(signal.SIGUSR1)} code=0 pid={os.getpid()}"]


def children_of(pid: int) -> List[int]:
    """Every process whose parent is *pid* (a zombie too), from every process's status."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if proc_status(int(entry)).get("PPid") == str(pid):
                    found.append(int(entry))
            except (OSError, KeyError):
                continue
    return found


@pytest.mark.parametrize("signals", [(signal.SIGINT,), (signal.SIGINT, signal.SIGTERM)],
                         ids=["sigint", "sigint-then-sigterm"])
def test_an_interrupted_snapshot_watch_reaps_the_snapshot_and_keeps_nothing(
        handover_exe: Path, cli_path: str, tmp_path: Path, outdir: Path, signals: Tuple[int, ...]) -> None:
    """With --snapshot the process has its signal once its clone exists; the watch interrupted while the
    clone is copied still has the clone reaped by the process (handed over again for it), unseen: no
    child left, the process running untraced, its signal delivered once, nothing kept."""
    side = tmp_path / "handler.txt"
    with target(handover_exe, side) as proc:
        cli = subprocess.Popen([sys.executable, "-m", "dumplib_cli", "watch", str(proc.pid), str(outdir),
                                "--signal", "USR1", "--kind", "full", "--compress", "gzip", "--compress-level", "9",
                                "--snapshot", "--max-pause", "off", "--no-space-check", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=cli_path), preexec_fn=signal_defaults())
        try:
            assert cli.stdout is not None
            assert json.loads(cli.stdout.readline())["event"] == "watching"
            os.kill(proc.pid, signal.SIGUSR1)
            # The copy from the clone is under way: a temporary exists and the process has had its signal.
            wait_for(lambda: bool(leftovers(outdir)) and bool(delivered(side)))
            for sig in signals:
                cli.send_signal(sig)
            out, err = cli.communicate(timeout=120)
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.wait()
        assert cli.returncode == 128 + signals[0], (cli.returncode, out, err)
        wait_for(lambda: state_of(proc.pid)[1] == "0" and state_of(proc.pid)[0][0] in "RS", 10)
        assert delivered(side) == [f"signo={int(signal.SIGUSR1)} code=0 pid={os.getpid()}"]
        assert children_of(proc.pid) == [], "the snapshot was left as a child of the process"
        assert sorted(p.name for p in outdir.iterdir()) == []
        events = [json.loads(line) for line in out.splitlines()]
        assert [e["event"] for e in events][-2:] == ["abandoned", "stopped"], events
