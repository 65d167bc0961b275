"""Text chosen by someone else (process names, /proc paths, names inside a dump file), made safe to show."""
from __future__ import annotations

import os

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Optional, Union

if TYPE_CHECKING:
    import re

# C0/C1 controls and the bidirectional overrides that make a terminal show something else than the text.
_HIDDEN_CHARS = "[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]"
#: Compiled on the first text that needs it: most names never do, and the compile is start-up.
_hidden: "Optional[re.Pattern[str]]" = None


def printable(text: Union[str, bytes]) -> str:
    """*text* as a person should see it: valid UTF-8 as is, every other byte as ``\\xNN``, controls escaped.

    A ``str`` is taken to be OS text decoded with surrogateescape (``os.listdir``, psutil, our /proc
    readers), so its undecodable bytes come out as the bytes they were, not as U+FFFD.
    """
    if isinstance(text, str):
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a lone surrogate that did not come from a byte
            raw = text.encode("utf-8", "backslashreplace")
    else:
        raw = bytes(text)
    shown = raw.decode("utf-8", "backslashreplace")
    if shown.isprintable():  # every character _HIDDEN_CHARS names is a control or format one: not printable
        return shown
    global _hidden
    if _hidden is None:
        import re

        _hidden = re.compile(_HIDDEN_CHARS)
    return _hidden.sub(_escape, shown)


def _escape(match: "re.Match[str]") -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shell_word(text: str) -> str:
    """*text* quoted for the shell a user pastes into (cmd.exe / PowerShell on Windows)."""
    import shlex  # only on this error path: `import dumplib` stays light
    import subprocess

    return subprocess.list2cmdline([text]) if os.name == "nt" else shlex.quote(text)
