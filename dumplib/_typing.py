"""Run-time stand-ins for the few ``typing`` names the dump path uses outside annotations.

Importing ``typing`` costs ~13 M instructions (~4 ms) of a one-shot ``dumplib dump`` (docs/benchmarks.md,
"The one-shot command's start-up"). The modules on that path import typing's names under
``TYPE_CHECKING`` (a module-level ``TYPE_CHECKING = False``, which mypy and pyright read as typing's),
so type checkers see typing itself; with ``from __future__ import annotations`` no annotation is
evaluated at run time. What a class statement or a module-level call needs at run time comes from here,
in the ``else`` branch:

    TYPE_CHECKING = False
    if TYPE_CHECKING:
        from typing import Optional, Protocol
    else:
        from ._typing import Protocol

A type alias (``Tick = Callable[[int], None]``) is defined under ``TYPE_CHECKING`` too, and bound to
``object`` in the ``else`` branch, for the modules that import it by name.
tests/unit/test_import_cost.py holds each stand-in to typing's behaviour where dumplib relies on it, and
fails if a small dump imports typing.
"""
from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import FrozenSet, List, Set, Tuple

__all__ = ["Generic", "NamedTuple", "Protocol", "TypeVar", "overload", "runtime_checkable"]


def TypeVar(name: str, *constraints: object, **options: object) -> str:  # noqa: N802 - typing's name
    """A type variable is only read by type checkers: at run time its name does."""
    return name


class Generic:
    """``class Box(Generic[T])``: subscripting gives the class back, so Box is a plain class."""

    __slots__ = ()

    def __class_getitem__(cls, params: object) -> type:
        return cls


class Protocol:
    """A protocol's body, as a plain base class (an explicit implementer inherits its defaults)."""

    __slots__ = ()


#: What typing's runtime_checkable leaves out of a protocol's members (besides ``_abc_`` names).
_NOT_MEMBERS = frozenset({"__abstractmethods__", "__annotations__", "__dict__", "__doc__", "__init__", "__module__",
                          "__new__", "__slots__", "__subclasshook__", "__weakref__", "__qualname__",
                          "__parameters__", "__orig_bases__", "__class_getitem__"})


class _Structural(type):
    """The metaclass of a runtime_checkable protocol: isinstance() asks whether every member is there."""

    __members: "FrozenSet[str]"

    def __instancecheck__(cls, obj: object) -> bool:
        return all(hasattr(obj, name) for name in cls.__members)


def runtime_checkable(cls: type) -> type:
    """As typing's: ``isinstance(obj, cls)`` is true when *obj* has every attribute and method *cls*
    declares (annotated or defined in its body), whatever its class."""
    members: "Set[str]" = set()
    for base in cls.__mro__[:-1]:
        if base is Protocol:
            continue
        members.update(name for name in (*base.__dict__, *base.__dict__.get("__annotations__", {}))
                       if name not in _NOT_MEMBERS and not name.startswith("_abc_"))
    space = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    space["__qualname__"] = cls.__qualname__
    checked = _Structural(cls.__name__, (), space)
    checked._Structural__members = frozenset(members)  # type: ignore[attr-defined]
    return checked


def NamedTuple(typename: str, fields: "List[Tuple[str, object]]") -> type:  # noqa: N802 - typing's name
    """The call form, ``NamedTuple("Stat", [("state", str), ...])``: collections.namedtuple, with the
    field types as ``__annotations__`` and the caller's module as ``__module__`` (for pickle and repr)."""
    import collections  # loaded by re and functools already: the dump path has it

    module = sys._getframe(1).f_globals.get("__name__", "__main__")
    cls = collections.namedtuple(typename, [name for name, _ in fields], module=module)  # type: ignore[misc]
    cls.__annotations__ = dict(fields)
    return cls


def overload(func: object) -> object:
    """The ``@overload`` signatures are for type checkers; the implementation defined after them replaces them."""
    return func
