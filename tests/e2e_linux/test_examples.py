import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
pytestmark = pytest.mark.linux


def test_dump_a_child_example_runs(tmp_path):
    done = subprocess.run([sys.executable, str(EXAMPLES / "dump_a_child.py"), str(tmp_path), "--kind", "mini"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    path = re.search(r": (\S+\.core)$", done.stdout.splitlines()[0]).group(1)
    assert Path(path).read_bytes()[:4] == b"\x7fELF"
    assert "stopped for" in done.stdout


def test_every_python_example_in_the_api_docs_runs(tmp_path, monkeypatch):
    """Each block runs as written but for its output directory: the reader's /tmp becomes this test's own
    (every CI run left seven dumps and their sidecars in /tmp before)."""
    monkeypatch.chdir(tmp_path)
    text = (EXAMPLES.parent / "docs" / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 5
    for block in blocks:
        code = re.sub(r'"/tmp(?=[/"])', lambda _: f'"{tmp_path}', block)  # "/tmp" and "/tmp/...", not "/tmpx"
        assert "/tmp" not in re.sub(r"#.*", "", code).replace(str(tmp_path), ""), code  # nothing else written there
        before = set(threading.enumerate())
        exec(compile(code, "docs/api.md", "exec"), {})
        # A block's own threads end with it: cancel_dumps' example fires a Timer 0.1 s later, which at load
        # could land in the next block's dump and cancel it. (dumplib's own threads are daemons.)
        for thread in [t for t in set(threading.enumerate()) - before if not t.daemon]:
            thread.join(60)
            assert not thread.is_alive(), f"a thread of this block still runs: {thread}\n{code}"
    assert len(list(tmp_path.glob("*.core*"))) >= 5, sorted(tmp_path.iterdir())


def test_rolling_compressed_dumps_example_keeps_the_newest(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        for _ in range(3):
            done = subprocess.run([sys.executable, str(EXAMPLES / "rolling_compressed_dumps.py"), str(child.pid),
                                   str(tmp_path), "--keep", "2"], capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
    finally:
        child.stdin.close()
        child.wait()
    assert re.search(r"\.core\.gz: \d+ bytes \(gzip; \d+ raw\)", done.stdout), done.stdout
    assert f"elf-core of pid {child.pid}" in done.stdout and "complete=True" in done.stdout
    dumps = sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".gz"))
    assert len(dumps) == 2, dumps  # three dumps (same-second names get -1, -2), retention kept the newest two
