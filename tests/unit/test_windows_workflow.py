"""The GitHub Actions workflow runs what only real Windows can prove.

Every test that skips with "real Windows only" under Wine must be collected by the workflow's
pytest command on windows-latest, under CI=true (where a missing tool fails instead of skipping).
"""
import ast
import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "windows.yml"
MARK = "real Windows only"


def _workflow() -> str:
    return WORKFLOW.read_text(encoding="utf-8")


def _pytest_command():
    lines = [ln.strip() for ln in _workflow().splitlines() if " -m pytest" in ln]
    assert len(lines) == 1, lines
    words = shlex.split(lines[0].split(" -m pytest", 1)[1])
    ignored = [w.split("=", 1)[1] for w in words if w.startswith("--ignore=")]
    paths = [w for w in words if not w.startswith("-")]
    assert not any(w in ("-k", "-m", "--deselect") or w.startswith(("--deselect", "-k", "-m")) for w in words), words
    return paths, ignored


def real_windows_only_tests():
    """(path relative to the repo, test function) for every test that can skip as "real Windows only":
    it calls pytest.skip with that reason, or a helper of its module that does."""
    found = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        helpers = {f.name for f in tree.body if isinstance(f, ast.FunctionDef)
                   and not f.name.startswith("test_") and _skips(f)}
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                calls = {c.func.id for c in ast.walk(node) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
                if _skips(node) or calls & helpers:
                    found.append((path.relative_to(REPO).as_posix(), node.name))
    return found


def _skips(node):
    """Whether *node* calls pytest.skip with a reason saying "real Windows only"."""
    for call in ast.walk(node):
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "skip":
            if any(isinstance(c, ast.Constant) and isinstance(c.value, str) and MARK in c.value
                   for arg in call.args for c in ast.walk(arg)):
                return True
    return False


def test_there_are_real_windows_only_tests_and_the_scan_finds_them():
    names = {name for _, name in real_windows_only_tests()}
    # The ones the issue names: miniplus heap, DACL read back, CancelCallback, 32-bit targets.
    for expected in ("test_miniplus_holds_the_private_heap_and_mini_does_not",
                     "test_every_file_dumplib_creates_reads_back_owner_only",
                     "test_cancel_callback_stops_the_write_early",
                     "test_a_64_bit_dumper_writes_a_32_bit_target_with_the_wow64_warning",
                     "test_a_32_bit_dumper_refuses_a_64_bit_target"):
        assert expected in names, expected


def test_every_real_windows_only_skip_names_a_test_the_workflow_runs():
    paths, ignored = _pytest_command()
    for file, name in real_windows_only_tests():
        assert re.fullmatch(r"test_\w+\.py", Path(file).name), f"{file} is not collected by pytest"
        assert any(file == p or file.startswith(p.rstrip("/") + "/") for p in paths), (file, name, paths)
        assert not any(file.startswith(i.rstrip("/") + "/") or file == i for i in ignored), \
            f"{file}::{name} skips as '{MARK}' but the workflow ignores it ({ignored})"


def test_workflow_runs_windows_latest_with_x64_39_313_and_x86_under_ci():
    text = _workflow()
    assert re.search(r"runs-on:\s*windows-latest", text)
    matrix = re.findall(r'python:\s*"([\d.]+)",\s*arch:\s*(x64|x86)', text)
    assert ("3.9", "x64") in matrix and ("3.13", "x64") in matrix and any(a == "x86" for _, a in matrix), matrix
    assert re.search(r'CI:\s*"true"', text)
    for bits in ("32", "64"):
        assert f"DUMPLIB_TEST_PYTHON{bits}:" in text


def test_every_action_is_pinned_by_commit():
    uses = re.findall(r"uses:\s*(\S+)", _workflow())
    assert uses
    for ref in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), f"{ref} is not pinned to a commit"


def test_every_pwsh_step_fails_on_a_failing_native_command():
    """pwsh reports only the last command's exit code: a failed pip install would pass unseen."""
    steps = re.findall(r"shell: pwsh\n(?:.*\n)*?\s+run: \|\n((?:\s{10}.*\n?)+)", _workflow())
    assert len(steps) >= 2, steps
    for body in steps:
        lines = [ln.strip() for ln in body.splitlines() if ln.strip()]
        first = ['$ErrorActionPreference = "Stop"', "$PSNativeCommandUseErrorActionPreference = $true"]
        assert lines[:2] == first, lines
        for i, line in enumerate(lines):
            if line.startswith("& "):
                assert i + 1 < len(lines) and lines[i + 1] == "if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }", line


def test_the_new_real_windows_proofs_are_among_the_workflows_tests():
    names = {name for _, name in real_windows_only_tests()}
    for expected in ("test_an_attached_watcher_keeps_the_programs_unhandled_exception_filter_from_running",
                     "test_an_interrupted_full_exception_dump_leaves_every_thread_running",
                     "test_a_system_process_is_dumped_with_every_thread_and_watched",
                     "test_another_users_process_is_dumped_with_every_thread_and_watched",
                     "test_a_snapshot_dump_at_an_exception_lets_the_target_go_once_the_capture_is_taken",
                     "test_a_key_file_others_can_read_is_refused_on_the_handle",
                     "test_a_key_file_that_is_a_symbolic_link_is_refused_never_followed",
                     "test_a_key_directory_that_is_a_junction_is_refused_and_nothing_is_made_through_it"):
        assert expected in names, expected
