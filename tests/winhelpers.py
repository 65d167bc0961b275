"""Helpers for the Wine tests: calling dumplib inside Windows python.exe, reading dumps independently."""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any, Dict

from winrig import Rig, windows_path


def api_call(rig: Rig, expr: str, timeout: float = 300) -> Dict[str, Any]:
    """Evaluate a dumplib call inside Windows python.exe; return its result or error as a dict."""
    script = (
        "import json, os, dumplib\n"
        "try:\n"
        f"    r = {expr}\n"
        "    print(json.dumps({'ok': r.to_dict()}))\n"
        "except dumplib.DumpError as e:\n"
        "    print(json.dumps({'error': type(e).__name__, 'message': str(e), 'details': e.details()}))\n"
    )
    done = rig.run_python(["-c", script], timeout=timeout)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def cli(rig: Rig, *args: str, timeout: float = 300):  # type: ignore[no-untyped-def]
    # A postmortem install or uninstall changes the prefix's registry: never run twice (Rig.run_python).
    again = tuple(args[:2]) not in (("postmortem", "install"), ("postmortem", "uninstall"))
    return rig.run_python(["-m", "dumplib_cli", *args], timeout=timeout, again_on_silent_end=again)


def parse_independently(path: Path, scratch: Path) -> Any:
    """Open a dump with the PyPI `minidump` parser (skelsec), a reader independent of ours.

    It rejects Wine's private stream 0xFFF0, so that directory entry is blanked in a copy first.
    """
    from minidump.minidumpfile import MinidumpFile

    copy = scratch / (path.name + ".copy")
    shutil.copyfile(path, copy)
    with open(copy, "r+b") as f:
        _sig, _ver, count, rva = struct.unpack("<4sIII", f.read(16))
        for i in range(count):
            f.seek(rva + 12 * i)
            (stype,) = struct.unpack("<I", f.read(4))
            if stype == 0xFFF0:
                f.seek(rva + 12 * i)
                f.write(struct.pack("<I", 0))
    return MinidumpFile.parse(str(copy))


__all__ = ["api_call", "cli", "parse_independently", "windows_path"]
