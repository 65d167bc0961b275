"""Start a process, dump it with dumplib, and report what was written.

    python examples/dump_a_child.py [DIRECTORY] [--kind mini|miniplus|full|triage]

Works on Windows (a minidump) and Linux (an ELF core). Every failure is a dumplib.DumpError
subclass whose message says what to do.
"""
import argparse
import subprocess
import sys
import tempfile

import dumplib


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("directory", nargs="?", default=tempfile.gettempdir())
    ap.add_argument("--kind", default="mini", choices=[k.value for k in dumplib.DumpKind])
    ns = ap.parse_args()
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        result = dumplib.create_dump(child.pid, ns.directory, ns.kind, comment="examples/dump_a_child.py")
    except dumplib.DumpError as exc:
        print(f"no dump: {exc}", file=sys.stderr)
        return 1
    finally:
        child.stdin.close()
        child.wait()
    print(f"{result.kind} dump of {result.process_name} (pid {result.pid}): {result.path}")
    print(f"{result.size} bytes, {result.seconds:.2f} s, backend {result.backend}")
    if result.stopped_seconds is not None:
        print(f"the process was stopped for {result.stopped_seconds * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
