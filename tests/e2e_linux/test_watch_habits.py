"""ProcDump users' habits: `--memory 100M,200M,300M` dumps once as each threshold is crossed; --json answers a
usage error with one JSON error object and exit code 2, never click's box."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List

import pytest

import dumplib
from linuxrig import proc_status

REPO = Path(__file__).resolve().parent.parent.parent
MIB = 1 << 20

GROWER = r"""
import sys
held = []
print("ready", flush=True)
for line in sys.stdin:
    block = bytearray(int(line) << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    held.append(block)
    print("ok", flush=True)
"""


@pytest.fixture(scope="module")
def cli_path(tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    """A PYTHONPATH under which `python -m dumplib_cli` is this tree's cli/ (not an installed copy)."""
    where = tmp_path_factory.mktemp("clipath")
    (where / "dumplib_cli").symlink_to(REPO / "cli")
    return os.pathsep.join([str(REPO), str(where), os.environ.get("PYTHONPATH", "")])


@pytest.fixture()
def grower() -> Iterator[subprocess.Popen]:  # type: ignore[type-arg]
    proc = subprocess.Popen([sys.executable, "-c", GROWER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    yield proc
    proc.kill()
    proc.wait()


def grow(proc: subprocess.Popen, mib: int) -> None:  # type: ignore[type-arg]
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(f"{mib}\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "ok"


def rss(pid: int) -> int:
    return int(proc_status(pid)["VmRSS"].split()[0]) * 1024


def test_a_list_of_memory_thresholds_dumps_once_as_each_is_crossed_in_order(grower, outdir: Path) -> None:  # type: ignore[no-untyped-def]
    base = rss(grower.pid)
    limits = [base + 30 * MIB, base + 60 * MIB, base + 90 * MIB]
    fired: List[float] = []
    which: List[str] = []

    def on_event(e: dumplib.WatchEvent) -> None:
        if e.event == "fired":
            fired.append(e.value)  # type: ignore[arg-type]
            which.append(e.trigger)  # type: ignore[arg-type]
        if e.event == "dumped":
            grow(grower, 35)  # past the next threshold, and still past every earlier one

    grow(grower, 40)
    results = dumplib.watch(grower.pid, [dumplib.MemoryAbove(n, once=True) for n in limits], count=3, interval=0,
                            sample_every=0.1, path=outdir, timeout=120, on_event=on_event)
    assert len(results) == 3 == len(list(outdir.glob("*.core")))
    # One firing per threshold, each measured past its own and short of the next (the kernel's own RSS).
    assert len(fired) == 3, fired
    # Each threshold fired once, in turn: the first never again though it still holds (listed first).
    assert which == [f"memory above {n} bytes" for n in limits], which
    for value, low, high in zip(fired, limits, limits[1:] + [1 << 62]):
        assert low <= value < high, (value, low, high)


def test_the_command_dumps_once_for_thresholds_crossed_in_one_leap(grower, outdir: Path, cli_path: str) -> None:  # type: ignore[no-untyped-def]
    """Already past both: one dump (of the highest), then none, though --count became 2 for the list."""
    base = rss(grower.pid)
    grow(grower, 40)
    sizes = f"{(base + 10 * MIB) // 1024}K,{(base + 20 * MIB) // 1024}K"
    done = subprocess.run([sys.executable, "-m", "dumplib_cli", "watch", str(grower.pid), str(outdir), "--memory", sizes,
                           "--interval", "0", "--sample-every", "0.1", "--timeout", "3", "--json"],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=cli_path))
    assert done.returncode == 0, done.stdout + done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    dumped = [e for e in events if e["event"] == "dumped"]
    assert len(dumped) == 1 and len(list(outdir.glob("*.core"))) == 1, events
    assert [e["trigger"] for e in events if e["event"] == "fired"] == [f"memory above {base + 20 * MIB} bytes"]
    assert events[-1]["event"] == "timeout"


@pytest.mark.parametrize("args,says", [
    (["watch", "1", "--bogus"], "No such option: --bogus"),
    (["watch", "1", "--count", "many"], "--count"),
    (["dump", "1", "--kind"], "requires an argument"),
])
def test_json_usage_errors_are_one_json_object_and_exit_2(cli_path: str, args: List[str], says: str) -> None:
    done = subprocess.run([sys.executable, "-m", "dumplib_cli", args[0], "--json", *args[1:]], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, PYTHONPATH=cli_path))
    assert done.returncode == 2
    assert done.stdout.count("\n") == 1 and done.stderr == "", (done.stdout, done.stderr)
    error = json.loads(done.stdout)["error"]
    assert error["type"] == "Usage" and error["exit_code"] == 2 and says in error["message"], error


def test_without_json_a_usage_error_is_still_typers_text(cli_path: str) -> None:
    done = subprocess.run([sys.executable, "-m", "dumplib_cli", "watch", "1", "--bogus"], capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, PYTHONPATH=cli_path))
    assert done.returncode == 2 and "No such option" in done.stderr and not done.stdout.startswith("{")
