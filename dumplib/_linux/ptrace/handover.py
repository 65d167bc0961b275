"""The writer's word that it has let a handed-over process go, and what it needs of the hand-over.

The signal watcher (signalwatch.py) holds a process at a signal-delivery-stop and hands it to
create_dump in group-stop; it takes the process back afterwards to deliver the signal. That stop must
end where a plain dump's does: when the writer has read the last byte of the process's memory and
let its threads go, not after the compressor's final flush, the read-back, the sidecar and the
rename. Only the writer knows that moment, and it does not know who handed the process over (nor
does create_dump take such an argument: a hand-over is not a caller's business). So the hand-over
runs the dump inside ``handed_over(pid, hand)`` and the writer calls ``target_runs(pid)`` as soon as
its own stop has ended (for a snapshot: once the clone exists and the target is let go). The record
lives in the running context (contextvars), so only the dump the hand-over runs, on the thread it
runs on, can reach it.

Two more things only the hand-over knows:
- how long the process was really held: from its signal's stop to the watcher's SIGCONT, which
  includes the hand-over itself and the plan made while the process waited in group-stop, where the
  writer's own figure covers only its own stop (``held_seconds``);
- a snapshot's clone must be reaped by the target with the target stopped and untraced by the watcher
  (snapshot/clone.py stops it again to do so): ``held_again(pid)`` hands the process over a second
  time for that, and takes it back after.
"""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import contextlib

from ..._accel import contextvars  # _contextvars: the same classes, without the stdlib module's start-up

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Iterator, Optional, Protocol, Tuple
else:
    from ..._typing import Protocol


class Hand(Protocol):
    """The hand-over's side (signalwatch._Job). Each call is cheap, safe to repeat, and never raises."""

    def give_back(self) -> None:
        """The writer has let the process go: the watcher takes it back (asynchronously)."""

    def hold_again(self) -> bool:
        """Have the watcher put the process back in group-stop, untraced (bounded); False if it could not."""

    def held_seconds(self) -> Optional[float]:
        """How long the process was held for this dump, every hold summed, once the last has ended
        (waited for, bounded); None if unknown."""


_HANDED: "contextvars.ContextVar[Optional[Tuple[int, Hand]]]" = contextvars.ContextVar(
    "dumplib_handed_over", default=None)


@contextlib.contextmanager
def handed_over(pid: int, hand: Hand) -> Iterator[None]:
    """Within the block, a dump of *pid* reaches *hand*."""
    token = _HANDED.set((pid, hand))
    try:
        yield
    finally:
        _HANDED.reset(token)


def _hand(pid: int) -> Optional[Hand]:
    handed = _HANDED.get()
    return handed[1] if handed is not None and handed[0] == pid else None


def is_handed_over(pid: int) -> bool:
    """Whether this dump of *pid* runs in a hand-over (the process waits in a group-stop dumplib caused)."""
    return _hand(pid) is not None


def target_runs(pid: int) -> None:
    """Called by the writer once it has let *pid* go: the watcher that handed it over takes it back now."""
    hand = _hand(pid)
    if hand is not None:
        hand.give_back()


@contextlib.contextmanager
def held_again(pid: int) -> Iterator[None]:
    """For the block, *pid* (taken back by its watcher after target_runs) is in group-stop again and
    untraced, so another tracer can stop it; given back after. Outside a hand-over, nothing."""
    hand = _hand(pid)
    if hand is None:
        yield
        return
    hand.hold_again()  # if it could not, the block runs anyway and its tracer says what it could not do
    try:
        yield
    finally:
        hand.give_back()


def stopped_seconds(pid: int, own: float) -> float:
    """How long *pid* was held for this dump: the hand-over's figure where there is one, else *own*
    (the writer's stop)."""
    hand = _hand(pid)
    held = hand.held_seconds() if hand is not None else None
    return own if held is None else held
