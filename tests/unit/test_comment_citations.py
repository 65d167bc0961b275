"""Comments and docstrings that cite a file of this repository cite one that exists (a moved module
must not leave its old name behind in the code that explains it)."""
import io
import re
import sys
import tokenize
from pathlib import Path
from typing import List

import pytest

#: The same source files are read on every OS; the Windows interpreter under Wine has no git to list
#: the repository's files with, so the check runs where git does.
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="reads git's file list; the Linux run checks the"
                                " same source files")

ROOT = Path(__file__).resolve().parents[2]
#: Files of other projects the code cites on purpose, with whose they are.
ELSEWHERE = {"_pslinux.py": "psutil"}
_PATH = re.compile(r"(?<![\w/.<-])((?:[\w.-]+/)*[\w-]+\.(?:py|md|c|go|toml|yml|yaml))\b")


def _texts(path: Path) -> List[tuple]:
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline):
        if tok.type == tokenize.COMMENT or (tok.type == tokenize.STRING
                                            and tok.string.lstrip("rbuRBU").startswith(('"""', "'''"))):
            out.append((tok.start[0], tok.string))
    return out


def _tracked() -> List[str]:
    """The repository's files: git's list where there is one (a build/ or .venv/ copy is no citation's
    proof), else every file below the root."""
    import subprocess

    done = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                          text=True)
    if done.returncode == 0 and done.stdout:
        return done.stdout.splitlines()
    return [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*")
            if p.is_file() and not {".git", ".venv", "__pycache__", "build"} & set(p.parts)]


def _missing(sources: List[Path]) -> List[str]:
    files = _tracked()
    missing = []
    for path in sources:
        for line, text in _texts(path):
            for ref in _PATH.findall(text):
                here = path.parent.relative_to(ROOT).as_posix() if ROOT in path.parents else None
                if ref in ELSEWHERE or ref in files or (here is not None and f"{here}/{ref}" in files):
                    continue
                if any(f == ref or f.endswith("/" + ref) for f in files):
                    continue  # named from a folder up (`_linux/host.py`, `host.py`)
                shown = path.relative_to(ROOT) if ROOT in path.parents else path.name
                missing.append(f"{shown}:{line} cites {ref}")
    return missing


def test_every_file_a_comment_cites_exists():
    sources = sorted([*(ROOT / "dumplib").rglob("*.py"), *(ROOT / "cli").glob("*.py")])
    assert len(sources) > 50
    assert _missing(sources) == []


def test_a_citation_of_a_file_that_is_gone_is_found(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text('"""See _linux/procfs.py and docs/benchmarks.md."""\n# and host.py\n', encoding="utf-8")
    assert _missing([planted]) == ["planted.py:1 cites _linux/procfs.py"]
