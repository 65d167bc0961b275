"""Option values as the commands read them: targets, raw masks, sizes, durations, --snapshot.

Each parser takes the text typer (or the fast parser) handed over and raises dumplib's own error for
a value that means nothing, so a bad value is reported, and exits, like any other error (--json too).
"""
from __future__ import annotations

from typing import Optional, overload

import dumplib


def target(text: str) -> "int | str":
    """A pid when *text* is one, else a process name (``svc:NAME`` included)."""
    # ASCII digits only: str.isdigit() is also true for "²" and "٣", which are names, not pids.
    return int(text) if text.isascii() and text.isdigit() else text


def flags(text: Optional[str]) -> Optional[int]:
    """``--flags``: a raw mask in any base Python reads (``0x1826``, ``6182``)."""
    if text is None:
        return None
    try:
        return int(text, 0)
    except ValueError:
        # InvalidKind, not InvalidArgument: the mask stands for a kind, as create_dump's own check says.
        raise dumplib.InvalidKind(f"--flags {text!r} is not an integer; write it like 0x1826", flags=None) from None


_SIZE = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20,
         "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30, "T": 1 << 40, "TB": 1 << 40, "TIB": 1 << 40}


@overload
def parse_size(text: str, argument: str) -> int: ...
@overload
def parse_size(text: None, argument: str) -> None: ...
@overload
def parse_size(text: Optional[str], argument: str) -> Optional[int]: ...
def parse_size(text: Optional[str], argument: str) -> Optional[int]:
    """``512M``, ``2G``, ``1.5GiB`` or plain bytes (binary units); *argument* names the option in the error."""
    if text is None:
        return None
    number = text.strip().upper().rstrip()
    unit = number.lstrip("0123456789.")
    digits = number[: len(number) - len(unit)]
    try:
        return int(float(digits) * _SIZE[unit.strip()])
    except (ValueError, KeyError):
        raise dumplib.InvalidArgument(f"{text!r} is not a size; write it like 512M, 2G or 1073741824",
                                      argument=argument, value=text) from None


_SECONDS = {"": 1.0, "S": 1.0, "MS": 0.001, "M": 60.0, "MIN": 60.0, "H": 3600.0}


def parse_duration(text: Optional[str], argument: str) -> Optional[float]:
    """``90``, ``90s``, ``500ms``, ``2m``, ``1h`` as seconds; ``off`` for no bound."""
    if text is None or text.strip().lower() == "off":
        return None
    number = text.strip().upper()
    unit = number.lstrip("0123456789.")
    try:
        seconds = float(number[: len(number) - len(unit)]) * _SECONDS[unit.strip()]
    except (ValueError, KeyError):
        seconds = 0.0
    if not seconds > 0:
        raise dumplib.InvalidArgument(f"{text!r} is not a duration; write it like 30, 90s, 2m or 500ms (or off)",
                                      argument=argument, value=text)
    return seconds


def parse_snapshot(text: Optional[str]) -> "bool | str":
    """`--snapshot` (on), `--snapshot=auto`, `--snapshot=off` -> create_dump's *snapshot*."""
    if text is None:
        return False
    value = text.strip().lower()
    if value in ("on", "yes", "true", "1"):
        return True
    if value in ("off", "no", "false", "0"):
        return False
    if value == "auto":
        return "auto"
    raise dumplib.InvalidArgument(f"--snapshot={text!r}: write --snapshot, --snapshot=auto or --snapshot=off",
                                  argument="snapshot", value=text)
