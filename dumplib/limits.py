"""Checks of the limits a user gives (retention, reserves, rates), shared by every entry point that takes them."""
from __future__ import annotations

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import List, Optional

from .errors import InvalidArgument


def check_limits(*, keep: Optional[int], max_total: Optional[int], min_free: Optional[int]) -> None:
    """Refuse limits that mean nothing (keep 0 or -1 would delete every earlier dump)."""
    for name, value, least in (("keep", keep, 1), ("max_total", max_total, 1), ("min_free", min_free, 0)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise InvalidArgument(f"{name} must be a whole number of at least {least}, not {value!r}",
                                  argument=name, value=value)


def parse_max_per(text: Optional[str]) -> Optional[List[int]]:
    """``10:3`` -> [10, 3] (at most 3 dumps per 10 minutes per executable); None stays None."""
    if text is None:
        return None
    try:
        minutes, most = (int(x) for x in str(text).split(":"))
    except ValueError:
        minutes = most = 0
    if minutes < 1 or most < 1:
        raise InvalidArgument(f"--max-per {text!r}: write MINUTES:N, e.g. 10:3", argument="max_per", value=text)
    return [minutes, most]
