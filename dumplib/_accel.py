"""``datetime``, ``signal`` and ``contextvars`` as their C modules, without the Python modules around them.

CPython's ``datetime`` module runs its whole pure-Python implementation before replacing it with
``_datetime``'s classes (~5.5 M instructions), and ``signal`` builds three enums over ``_signal``'s
functions and numbers (~3.9 M); together ~4 ms of a one-shot ``dumplib dump`` (docs/benchmarks.md,
"The one-shot command's start-up"). The C modules hold the same things: ``_datetime.datetime`` *is*
``datetime.datetime``, and ``_signal``'s functions are the ones ``signal`` wraps, taking and
returning plain ints where ``signal`` gives ``Signals`` and ``Handlers`` (int enums, equal to them).
``contextvars`` only re-exports ``_contextvars``'s classes; finding and loading its file costs
~1 M instructions of a one-shot dump (docs/benchmarks.md, "eleventh session").
Where the interpreter has no such module, the ordinary one. Type checkers see the ordinary modules.
tests/unit/test_import_cost.py holds these equalities.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import contextvars
    import datetime
    import signal
else:
    try:
        import _contextvars as contextvars
    except ImportError:
        import contextvars
    try:
        import _datetime as datetime
    except ImportError:
        import datetime
    try:
        import _signal as signal
    except ImportError:
        import signal

__all__ = ["contextvars", "datetime", "signal"]
