"""Streaming a dump to a store vs dumping locally and uploading with the store's CLI (issue #19's benchmark).

    python benchmarks/egress_vs_cli_upload.py [--runs 3] [--heap 2048] [--stores s3,azure] [--snapshot auto]
                                              [--compress zstd|none] [--aws PATH] [--az PATH]

Against loopback stand-ins started here (moto_server for S3, Azurite for Azure Blob; tests/egressrig.py
finds them: moto_server beside this Python, Azurite from $DUMPLIB_AZURITE), a C target with a HEAP MiB heap
of non-zero data and a 1 ms ticker thread (tests/e2e_linux/target.c --heap --ticker). Per store, per run,
interleaved in rotating order:

- stream: ``dumplib dump PID URL -k full -z zstd --snapshot=auto --json`` (the CLI, in a subprocess;
  ``--compress none``: uncompressed, so every byte crosses the loopback and the upload's pace shows);
- local + CLI: ``dumplib dump PID DIR -k full -z zstd --snapshot=auto --json`` to a local directory, then
  ``aws s3 cp FILE s3://...`` (PyPI awscli) or ``az storage blob upload --file FILE ...`` (PyPI azure-cli),
  then the local file deleted.

Measured: time to a committed object (from starting dumplib to the upload's exit), the target's stall
(the longest gap its 1 ms ticker saw, the pause as the target lives it), dumplib's peak RSS (VmHWM) and
the uploading CLI's (wait4's ru_maxrss). Medians of the runs. The target's heap is a regular pattern that
zstd shrinks ~35:1, so the bytes on the wire are few: the comparison is of the whole pipeline, on a
loopback, not of a network.

Needs root (ptrace), gcc, moto_server, Azurite with node, awscli and azure-cli (a contender whose CLI is
missing is skipped and said so). Never contacts anything but 127.0.0.1.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
from egressrig import (AZURITE_ACCOUNT, CLI_WRAPPER, azure_container, azurite, azurite_connection_string,  # noqa: E402
                       clean_env, moto, peak_rss_kib, s3_client, s3_env)
from linuxrig import build_target, run_target  # noqa: E402

MiB = 1 << 20
BUCKET = "bench"


def run_measured(argv: List[str], env: Dict[str, str], out: Path) -> Tuple[int, float, int]:
    """(exit code, seconds, peak RSS in bytes) of *argv*, its stdout into *out* (wait4 gives the RSS)."""
    start = time.perf_counter()
    with open(out, "wb") as f:
        proc = subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(err.decode(errors="replace")[-2000:])
    return proc.returncode, seconds, usage.ru_maxrss * 1024


@contextlib.contextmanager
def store(kind: str) -> Iterator[Tuple[str, Dict[str, str], Dict[str, str]]]:
    """(URL prefix, dumplib's credentials, the store's own CLI's environment) for a fresh stand-in."""
    if kind == "s3":
        with moto() as port:
            s3_client(port).create_bucket(Bucket=BUCKET)
            env = s3_env(port)
            yield f"s3://{BUCKET}/", env, env
    else:
        with azurite() as port:
            azure_container(port, BUCKET).create_container()
            conn = azurite_connection_string(port)
            config = tempfile.mkdtemp(prefix="azcli-")
            yield (f"az://{BUCKET}/", {"AZURE_STORAGE_CONNECTION_STRING": conn},
                   {"AZURE_STORAGE_CONNECTION_STRING": conn, "AZURE_CONFIG_DIR": config,
                    "AZURE_CORE_COLLECT_TELEMETRY": "false", "AZURE_CORE_ONLY_SHOW_ERRORS": "true",
                    "AZURE_CORE_NO_COLOR": "true"})
            shutil.rmtree(config, ignore_errors=True)


#: -z for both contenders (--compress; "none": uncompressed).
COMPRESS = ["-z", "zstd"]


def dumplib_argv(pid: int, where: str, snapshot: str) -> List[str]:
    return [sys.executable, "-c", CLI_WRAPPER, "dump", str(pid), where, "-k", "full", *COMPRESS,
            f"--snapshot={snapshot}", "--json"]


def stream(t, url: str, creds: Dict[str, str], snapshot: str, work: Path) -> Dict[str, float]:
    status = work / "status"
    env = clean_env(**creds, DUMPLIB_STATUS_OUT=str(status))
    env.pop("DUMPLIB_UPLOAD_BUFFER", None)
    t.ask("gap")
    code, seconds, _ = run_measured(dumplib_argv(t.pid, url, snapshot), env, work / "out.json")
    stall = int(t.ask("gap")) / 1e6
    if code != 0:
        raise SystemExit(f"dumplib dump to {url} failed ({code})")
    result = json.loads((work / "out.json").read_text())
    return {"committed s": seconds, "stall s": stall, "dumplib MiB": peak_rss_kib(status) / 1024,
            "upload MiB": peak_rss_kib(status) / 1024, "stored MiB": result["size"] / MiB,
            "raw MiB": result["raw_size"] / MiB}


def local_then_cli(t, kind: str, url: str, cli_env: Dict[str, str], cli: str, snapshot: str, work: Path,
                   run: int) -> Dict[str, float]:
    local = work / "local"
    local.mkdir(exist_ok=True)
    status = work / "status"
    env = clean_env(DUMPLIB_STATUS_OUT=str(status))
    t.ask("gap")
    code, dump_s, _ = run_measured(dumplib_argv(t.pid, str(local), snapshot), env, work / "out.json")
    if code != 0:
        raise SystemExit(f"dumplib dump to {local} failed ({code})")
    result = json.loads((work / "out.json").read_text())
    path = Path(result["path"])
    name = f"cli/run{run}/{path.name}"
    if kind == "s3":
        argv = [cli, "s3", "cp", "--only-show-errors", str(path), f"{url}{name}"]
    else:
        argv = [cli, "storage", "blob", "upload", "--only-show-errors", "--file", str(path), "--container-name",
                BUCKET, "--name", name, "--account-name", AZURITE_ACCOUNT, "--overwrite"]
    code, up_s, up_rss = run_measured(argv, clean_env(**cli_env), work / "cli.out")
    stall = int(t.ask("gap")) / 1e6
    if code != 0:
        raise SystemExit(f"{argv[:3]} failed ({code})")
    for p in (path, Path(result["sidecar"] or "")):
        if p.name:
            p.unlink(missing_ok=True)
    if kind == "azure" and not COMPRESS:  # Azurite holds blobs in memory (1 GiB): make room for the next run
        subprocess.run([cli, "storage", "blob", "delete", "--only-show-errors", "--container-name", BUCKET,
                        "--name", name, "--account-name", AZURITE_ACCOUNT], env=clean_env(**cli_env), check=False)
    return {"committed s": dump_s + up_s, "stall s": stall, "dumplib MiB": peak_rss_kib(status) / 1024,
            "upload MiB": up_rss / MiB, "stored MiB": result["size"] / MiB, "raw MiB": result["raw_size"] / MiB,
            "dump s": dump_s, "upload s": up_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--heap", type=int, default=2048, help="the target's heap, MiB (default 2048: a 2 GiB dump)")
    ap.add_argument("--stores", default="s3,azure")
    ap.add_argument("--snapshot", default="auto", help="--snapshot for both contenders (auto, off)")
    ap.add_argument("--compress", default="zstd", help="zstd, gzip, or none")
    ap.add_argument("--aws", default=shutil.which("aws"), help="the aws CLI (PyPI awscli)")
    ap.add_argument("--az", default=shutil.which("az"), help="the az CLI (PyPI azure-cli)")
    ns = ap.parse_args()
    COMPRESS[:] = [] if ns.compress == "none" else ["-z", ns.compress]
    work = Path(tempfile.mkdtemp(prefix="egress-bench-"))
    exe = build_target(work)
    clis = {"s3": ns.aws, "azure": ns.az}
    print(f"full dump of a {ns.heap} MiB heap, -z {ns.compress}, --snapshot={ns.snapshot}; median of {ns.runs} interleaved"
          " runs; committed = dumplib started to object committed; stall = longest gap of the target's 1 ms ticker")
    print(f"{'store':<7} {'how':<22} {'committed s':>11} {'stall s':>8} {'dumplib MiB':>11} {'upload MiB':>10}"
          f" {'stored MiB':>10} {'raw MiB':>8}")
    try:
        with run_target([str(exe), "--heap", str(ns.heap), "--ticker"]) as t:
            for kind in ns.stores.split(","):
                cli = clis[kind]
                label = "aws s3 cp" if kind == "s3" else "az storage blob upload"
                if not cli:
                    print(f"{kind:<7} local + {label}: not run, the CLI is not installed (--{'aws' if kind == 's3' else 'az'})")
                with store(kind) as (url, creds, cli_env):
                    rows: Dict[str, List[Dict[str, float]]] = {"stream": [], "local + CLI": []}
                    for run in range(ns.runs):
                        order = ["stream", "local + CLI"] if run % 2 == 0 else ["local + CLI", "stream"]
                        for how in order:
                            if how == "stream":
                                rows[how].append(stream(t, f"{url}stream/run{run}/", creds, ns.snapshot, work))
                            elif cli:
                                rows[how].append(local_then_cli(t, kind, url, cli_env, cli, ns.snapshot, work, run))
                    for how, runs in rows.items():
                        if not runs:
                            continue
                        m = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                        name = "dumplib to the store" if how == "stream" else f"dumplib local + {label.split()[0]}"
                        print(f"{kind:<7} {name:<22} {m['committed s']:>11.2f} {m['stall s']:>8.3f}"
                              f" {m['dumplib MiB']:>11.0f} {m['upload MiB']:>10.0f} {m['stored MiB']:>10.1f}"
                              f" {m['raw MiB']:>8.0f}" + (f"   (dump {m['dump s']:.2f} s + upload {m['upload s']:.2f} s)"
                                                          if "dump s" in m else ""), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
