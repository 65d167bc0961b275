"""``json.dumps`` for the plain data dumplib writes (the sidecar, its record in the dump), without ``json``.

Importing ``json`` compiles six regular expressions (its decoder's, scanner's and encoder's): ~6 M
instructions (~2 ms) of every one-shot ``dumplib dump`` (docs/benchmarks.md, "The one-shot command's
start-up"), which only writes JSON. This writes the same text as ``json.dumps(obj, indent=...,
separators=...)`` with its other defaults (``ensure_ascii``, ``allow_nan``), strings escaped by the
C function ``json`` itself uses; anything but dicts with ``str`` keys, lists, tuples, ``str``, ``int``,
``float``, ``bool`` and ``None`` (a subclass included) is handed to ``json.dumps`` whole.
tests/unit/test_import_cost.py holds the two equal on hostile text and every shape the sidecar has.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, List, Optional, Tuple

__all__ = ["dumps"]

try:
    from _json import encode_basestring_ascii as _quote  # CPython's, as json.encoder's
except ImportError:  # another interpreter: json itself
    _quote = None  # type: ignore[assignment]


class _Other(Exception):
    """A value this writer leaves to json."""


def dumps(obj: Any, *, indent: Optional[int] = None, separators: Optional[Tuple[str, str]] = None) -> str:
    """The text ``json.dumps(obj, indent=indent, separators=separators)`` returns."""
    if _quote is not None and (indent is None or type(indent) is int):
        if separators is None:
            separators = (",", ": ") if indent is not None else (", ", ": ")
        out: List[str] = []
        try:
            _write(obj, out.append, _quote, indent, separators, 0)
            return "".join(out)
        except _Other:
            pass
    import json

    return json.dumps(obj, indent=indent, separators=separators)


def _write(obj: Any, put: Callable[[str], object], quote: Callable[[str], str], indent: Optional[int],
           separators: Tuple[str, str], level: int) -> None:
    cls = type(obj)
    if obj is None:
        put("null")
    elif obj is True:
        put("true")
    elif obj is False:
        put("false")
    elif cls is str:
        put(quote(obj))
    elif cls is int:
        put(int.__repr__(obj))
    elif cls is float:
        put(_float(obj))
    elif cls is dict or cls is list or cls is tuple:
        items = list(obj.items()) if cls is dict else list(obj)
        if not items:
            put("{}" if cls is dict else "[]")
            return
        put("{" if cls is dict else "[")
        inner = "" if indent is None else "\n" + " " * (indent * (level + 1))
        for i, item in enumerate(items):
            put((separators[0] if i else "") + inner)
            if cls is dict:
                key, item = item
                if type(key) is not str:
                    raise _Other()  # json turns numbers and None into text keys, sorts nothing: its rules
                put(quote(key) + separators[1])
            _write(item, put, quote, indent, separators, level + 1)
        put(("" if indent is None else "\n" + " " * (indent * level)) + ("}" if cls is dict else "]"))
    else:
        raise _Other()


def _float(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)
