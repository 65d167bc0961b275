"""Take a compressed full dump of a process into a directory that keeps only the newest few.

    python examples/rolling_compressed_dumps.py PID DIRECTORY [--codec zstd|gzip] [--keep N]

What a watchdog script would run when a service misbehaves: the dump streams through the
compressor (Linux) so the raw size never lands on disk, the free-space guard still applies, and
older dumplib dumps in DIRECTORY beyond --keep are deleted (other files never are). Prints the
result and what `dumplib.info` reads back from the compressed file.
"""
import argparse
import sys

import dumplib


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("pid", type=int)
    ap.add_argument("directory")
    ap.add_argument("--codec", default="gzip", choices=["zstd", "gzip"])
    ap.add_argument("--keep", type=int, default=3)
    ns = ap.parse_args()
    try:
        result = dumplib.create_dump(ns.pid, ns.directory, "full", compress=ns.codec, keep=ns.keep, fit=True)
    except dumplib.DumpError as exc:
        print(f"no dump: {exc}", file=sys.stderr)
        return 1
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{result.path}: {result.size} bytes ({result.compression}; {result.raw_size} raw), sha256 {result.sha256}")
    d = dumplib.info(result.path)
    print(f"{d.format} of pid {d.pid}, {d.threads} threads, {d.memory_bytes} bytes of memory, complete={d.complete}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
