"""The error hierarchy's promises (docs/api.md): every fact a raiser attaches is declared on its class
and always present; ``reason`` has one spelling per event. Read from every raise in the code."""
from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

import dumplib
import dumplib.errors as errors

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(ROOT / "dumplib").rglob("*.py"), *(ROOT / "cli").rglob("*.py")])
#: Error classes defined outside errors.py (platform modules), by name -> the errors.py class they extend.
SUBCLASSES = {"PostmortemRefused": errors.InvalidArgument, "StreamTimeout": errors.DumpFailed,
              "Win32Error": errors.DumpFailed}


def _error_class(name: str) -> type:
    if name in errors.__all__:
        return getattr(errors, name)
    return SUBCLASSES[name]


def _calls() -> List[Tuple[str, str, int, ast.Call]]:
    """(class name, file, line, call) for every construction of a dumplib error in the code."""
    known = {n for n in errors.__all__ if issubclass(getattr(errors, n), errors.DumpError)} | set(SUBCLASSES)
    out = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if name in known:
                out.append((name, str(path.relative_to(ROOT)), node.lineno, node))
    return out


CALLS = _calls()


def _accepted(cls: type) -> Set[str]:
    declared = set(cls._declared())  # type: ignore[attr-defined]
    params = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            params |= {p for p in inspect.signature(klass.__init__).parameters if p not in ("self", "details")}
    return declared | params


def test_the_code_raises_errors_at_all():
    """The reader below sees the raises it checks (a refactor that hid them would make it pass on nothing)."""
    assert len(CALLS) > 100 and {"TargetRefused", "DumpFailed", "InsufficientDiskSpace"} <= {c[0] for c in CALLS}


def test_every_fact_a_raiser_attaches_is_declared_on_its_class():
    undeclared = []
    for name, where, line, call in CALLS:
        accepted = _accepted(_error_class(name))
        undeclared += [f"{where}:{line} {name}({k.arg}=)" for k in call.keywords if k.arg and k.arg not in accepted]
    assert undeclared == []


def test_every_reason_is_one_of_the_spellings():
    spellings = {r.value for r in errors.Reason}
    wrong = []
    for name, where, line, call in CALLS:
        for k in call.keywords:
            if k.arg == "reason" and isinstance(k.value, ast.Constant) and k.value.value not in spellings:
                wrong.append(f"{where}:{line} {name}(reason={k.value.value!r})")
    assert wrong == []


def test_an_unknown_reason_is_refused_where_it_is_raised():
    with pytest.raises(ValueError):
        dumplib.DumpFailed("x", reason="target-exited")  # the drifted spelling of "exited"


@pytest.mark.parametrize("cls, args", [
    (dumplib.TargetRefused, {"message": "m", "pid": 1, "reason": "traced"}),
    (dumplib.DumpFailed, {"message": "m"}),
    (dumplib.AccessDenied, {"message": "m", "pid": 1}),
])
def test_every_declared_fact_is_present_and_the_reason_prints_as_its_spelling(cls, args):
    exc = cls(**args)
    details = exc.details()
    assert list(details) == cls._declared() and details  # every fact, in declared order
    assert all(getattr(exc, k) is None for k in cls._declared() if k not in args)
    text = json.dumps(details)
    if "reason" in args:
        assert exc.reason == args["reason"] and isinstance(exc.reason, dumplib.Reason)
        assert json.loads(text)["reason"] == args["reason"] and str(exc.reason) == args["reason"]


def test_the_reader_catches_an_undeclared_fact():
    """A planted raise with an undeclared fact is found (the checks above can fail)."""
    call = ast.parse("DumpFailed('x', pid=1, colour='red')").body[0].value  # type: ignore[attr-defined]
    accepted = _accepted(errors.DumpFailed)
    assert [k.arg for k in call.keywords if k.arg not in accepted] == ["colour"]


def test_reason_lives_in_errors_wherever_it_is_built_and_survives_pickling():
    # Reason is built in its own module at the first use (dumplib/_reasons.py), as dumplib.errors.Reason:
    # what scripts import, compare with and unpickle (a snapshot's tracer process sends its errors so).
    import pickle
    import subprocess
    import sys

    assert errors.Reason is dumplib.Reason and errors.Reason.__module__ == "dumplib.errors"
    exc = pickle.loads(pickle.dumps(dumplib.TargetRefused("m", pid=1, reason="memory-map-locked")))
    assert exc.reason is errors.Reason.MEMORY_MAP_LOCKED and exc.details()["reason"] == "memory-map-locked"
    # A fresh interpreter: unpickling finds the class through dumplib.errors before anything built it.
    blob = pickle.dumps(dumplib.DumpFailed("m", reason="disk-full"))
    probe = ("import pickle, sys; e = pickle.loads(sys.stdin.buffer.read()); import dumplib.errors as x;"
             " print(e.reason is x.Reason.DISK_FULL, x.Reason.DISK_FULL == 'disk-full')")
    done = subprocess.run([sys.executable, "-c", probe], input=blob, capture_output=True, cwd=ROOT, timeout=60)
    assert done.stdout.split() == [b"True", b"True"], done.stderr


def test_reason_is_listed_by_dir_before_its_first_use():
    # Built at its first use (dumplib/_reasons.py); dir() and inspect must still show it, in a fresh
    # interpreter where nothing has used it yet.
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = str(Path(dumplib.__file__).resolve().parents[1])  # this checkout's, also inside Windows python
    code = "import dumplib.errors as e, inspect\nassert 'Reason' not in vars(e)\nprint('Reason' in dir(e))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=root)).stdout
    assert out.split() == ["True"]
