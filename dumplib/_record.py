"""Records: the dump path's data classes, made without importing ``dataclasses``.

``import dataclasses`` loads ``inspect`` (with ``ast``, ``dis`` and ``tokenize``), and each
``@dataclasses.dataclass`` compiles five or six generated methods as its module is imported: with the
twenty on the path of one ``dumplib dump``, about half of the command's start-up over a bare
interpreter (docs/benchmarks.md, "The one-shot command's start-up"). A record shares its methods
(``__repr__``, ``__eq__``, ``__hash__`` and, when frozen, ``__setattr__`` and ``__delattr__``, with a
dataclass's behaviour) and compiles one, ``__init__``, only once a class has made COMPILE_AFTER
instances (then it runs as fast as a dataclass's and ``inspect.signature`` shows the fields): most
records of one dump are made once or twice, and their first instances bind their arguments here.

To ``dataclasses`` a record is a dataclass: ``fields``, ``asdict``, ``replace`` and ``is_dataclass``
work on it (the public results are documented as frozen dataclasses), by ``dataclasses``' own
``Field`` objects, which ``dataclasses`` builds the first time one is asked for. Assigning to a field
of a frozen record raises ``dataclasses.FrozenInstanceError``. Type checkers read ``record`` as a
dataclass decorator (PEP 681).
"""
from __future__ import annotations

# Not typing's: typing is start-up too (see dumplib/__init__.py); mypy reads this name as typing's.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Optional, Tuple, Type, TypeVar

    from typing_extensions import dataclass_transform

    T = TypeVar("T")
else:
    def dataclass_transform(**_options):  # for type checkers only: nothing to do at run time
        return lambda decorated: decorated

__all__ = ["record", "field", "replace", "asdict"]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


#: "No default given" (None is a default).
MISSING: Any = _Missing()


class _Factory:
    def __repr__(self) -> str:
        return "<factory>"


#: What a signature shows for a field whose default comes from a factory, as a dataclass's does.
FACTORY: Any = _Factory()


class Field:
    """One field's options, as ``dataclasses.field`` takes them (the ones records use)."""

    __slots__ = ("name", "type", "default", "default_factory", "init", "repr", "compare")

    def __init__(self, default: Any = MISSING, default_factory: Any = MISSING, init: bool = True,
                 repr: bool = True, compare: bool = True) -> None:
        self.name = ""
        self.type: Any = None
        self.default = default
        self.default_factory = default_factory
        self.init = init
        self.repr = repr
        self.compare = compare


def field(*, default: Any = MISSING, default_factory: "Optional[Callable[[], Any]]" = None, init: bool = True,
          repr: bool = True, compare: bool = True) -> Any:
    """A field's options, as ``dataclasses.field``: a default, a factory of defaults, and whether the
    field is an ``__init__`` parameter, shown by ``repr`` and compared by ``==``."""
    if default is not MISSING and default_factory is not None:
        raise ValueError("cannot specify both default and default_factory")
    return Field(default, MISSING if default_factory is None else default_factory, init, repr, compare)


@dataclass_transform(field_specifiers=(field,))
def record(*, frozen: bool = False) -> "Callable[[Type[T]], Type[T]]":
    """Make the decorated class a record, as ``@dataclasses.dataclass(frozen=frozen)`` would."""
    def make(cls: "Type[T]") -> "Type[T]":
        _make(cls, frozen)
        return cls

    return make


def replace(obj: "T", **changes: Any) -> "T":
    """A copy of record *obj* with *changes*, as ``dataclasses.replace``."""
    for f in _fields(obj):
        if not f.init:
            if f.name in changes:
                raise ValueError(f"field {f.name} is declared with init=False, it cannot be specified with replace()")
            continue
        if f.name not in changes:
            changes[f.name] = getattr(obj, f.name)
    return type(obj)(**changes)


def asdict(obj: Any) -> "Dict[str, Any]":
    """Record *obj* as a dict, records in it too, as ``dataclasses.asdict``."""
    return {f.name: _plain(getattr(obj, f.name)) for f in _fields(obj)}


def _fields(obj: Any) -> "Tuple[Field, ...]":
    specs: "Optional[Tuple[Field, ...]]" = getattr(type(obj), "__record_fields__", None)
    if specs is None:
        raise TypeError(f"{type(obj).__name__} is not a record")
    return specs


def _plain(value: Any) -> Any:
    if hasattr(type(value), "__record_fields__"):
        return asdict(value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple: rebuilt by position
        return type(value)(*[_plain(v) for v in value])
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return type(value)((_plain(k), _plain(v)) for k, v in value.items())
    if value is None or isinstance(value, (str, bytes, int, float, frozenset)):
        return value
    import copy  # as dataclasses.asdict: anything else is deep-copied (none of dumplib's records has one)

    return copy.deepcopy(value)


def _make(cls: type, frozen: bool) -> None:
    specs = []
    for name, note in cls.__dict__.get("__annotations__", {}).items():
        if str(note).startswith(("ClassVar", "typing.ClassVar")):
            continue
        value = cls.__dict__.get(name, MISSING)
        spec = value if isinstance(value, Field) else Field(default=value)
        spec.name, spec.type = name, note
        if isinstance(spec.default, (list, dict, set)):
            raise ValueError(f"mutable default {type(spec.default)} for field {name} is not allowed: use default_factory")
        if spec.default is MISSING:
            if name in cls.__dict__:
                delattr(cls, name)
        else:
            setattr(cls, name, spec.default)
        specs.append(spec)
    fields = tuple(specs)
    defaulted = [f.default is not MISSING or f.default_factory is not MISSING for f in fields if f.init]
    if True in defaulted and False in defaulted[defaulted.index(True):]:
        raise TypeError(f"{cls.__name__}: a field without a default follows one with a default")
    setattr(cls, "__record_fields__", fields)
    setattr(cls, "__match_args__", tuple(f.name for f in fields if f.init))
    setattr(cls, "__init__", _binding_init(cls, fields, frozen))
    own = cls.__dict__
    if "__repr__" not in own:
        setattr(cls, "__repr__", _repr)
    if "__eq__" not in own:
        setattr(cls, "__eq__", _eq)
    # As dataclasses: a frozen record hashes its compared fields, a mutable one is unhashable, unless
    # the class wrote its own __hash__ (a class body with __eq__ and no __hash__ holds __hash__ = None).
    if own.get("__hash__", MISSING) is MISSING or (own["__hash__"] is None and "__eq__" in own):
        setattr(cls, "__hash__", _hash if frozen else None)
    if frozen:
        setattr(cls, "__setattr__", _frozen_setattr)
        setattr(cls, "__delattr__", _frozen_delattr)
    setattr(cls, "__dataclass_fields__", _AsDataclass("__dataclass_fields__", fields, frozen))
    setattr(cls, "__dataclass_params__", _AsDataclass("__dataclass_params__", fields, frozen))


#: A record binds its arguments itself for its first instances, and compiles its ``__init__`` (as fast
#: as a dataclass's, and with its signature) at this many: most records of a dump are made once or
#: twice, and each compile is start-up (~0.3 ms); Regions and Segments are made two or three times per
#: mapping, and binding here costs ~1.5 us more per instance than the compiled __init__.
COMPILE_AFTER = 16


def _binding_init(cls: type, fields: "Tuple[Field, ...]", frozen: bool) -> Any:
    """The class's first __init__: binds as the compiled one does, and puts that one in its place at
    the COMPILE_AFTER-th instance. Until then ``inspect.signature`` shows ``(*args, **kwargs)``."""
    taken = tuple(f for f in fields if f.init)
    names = {f.name for f in taken}
    name = f"{cls.__qualname__}.__init__()"
    post = hasattr(cls, "__post_init__")
    made = 0

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal made
        made += 1
        if made >= COMPILE_AFTER:
            compiled = _init(cls, fields, frozen)
            type.__setattr__(cls, "__init__", compiled)
            return compiled(self, *args, **kwargs)  # type: ignore[no-any-return]
        if len(args) > len(taken):
            raise TypeError(f"{name} takes {len(taken) + 1} positional arguments but {len(args) + 1} were given")
        values = {f.name: value for f, value in zip(taken, args)}
        for key, value in kwargs.items():
            if key in values:
                raise TypeError(f"{name} got multiple values for argument {key!r}")
            if key not in names:
                raise TypeError(f"{name} got an unexpected keyword argument {key!r}")
            values[key] = value
        put = object.__setattr__ if frozen else setattr
        for f in fields:
            if f.name in values:
                value = values[f.name]
            elif f.default is not MISSING:
                value = f.default
            elif f.default_factory is not MISSING:
                value = f.default_factory()
            elif f.init:
                raise TypeError(f"{name} missing 1 required positional argument: {f.name!r}")
            else:
                continue  # init=False and no default: left for __post_init__, as the compiled one does
            put(self, f.name, value)
        if post:
            self.__post_init__()
        return None

    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    __init__.__module__ = cls.__module__
    return __init__


def _init(cls: type, fields: "Tuple[Field, ...]", frozen: bool) -> Any:
    """The class's __init__, compiled from source as dataclasses does: one method, not six."""
    space: "Dict[str, Any]" = {"_FACTORY": FACTORY, "_setattr": object.__setattr__}
    params, lines = ["self"], []
    for i, f in enumerate(fields):
        value = f.name
        if f.default is not MISSING:
            space[f"_default{i}"] = f.default
            default = f"_default{i}"
        elif f.default_factory is not MISSING:
            space[f"_factory{i}"] = f.default_factory
            default = "_FACTORY"
            value = f"_factory{i}() if {f.name} is _FACTORY else {f.name}" if f.init else f"_factory{i}()"
        else:
            default = ""
        if f.init:
            params.append(f"{f.name}={default}" if default else f.name)
        elif default == "":
            continue  # dataclasses leaves such a field unset until __post_init__ sets it
        elif f.default is not MISSING:
            value = default
        lines.append(f"_setattr(self, {f.name!r}, {value})" if frozen else f"self.{f.name} = {value}")
    if hasattr(cls, "__post_init__"):
        lines.append("self.__post_init__()")
    source = f"def __init__({', '.join(params)}):\n    " + ("\n    ".join(lines) or "pass") + "\n"
    exec(source, space)  # noqa: S102 - the source is built here from the class's own field names
    init = space["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__annotations__ = {**{f.name: f.type for f in fields if f.init}, "return": None}  # as a dataclass's
    init.__module__ = cls.__module__
    return init


def _repr(self: Any) -> str:
    shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in self.__record_fields__ if f.repr)
    return f"{type(self).__qualname__}({shown})"


def _compared(self: Any) -> "Tuple[Any, ...]":
    return tuple(getattr(self, f.name) for f in self.__record_fields__ if f.compare)


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is self.__class__:
        return _compared(self) == _compared(other)
    return NotImplemented


def _hash(self: Any) -> int:
    return hash(_compared(self))


def _frozen_error(name: str) -> Exception:
    import dataclasses  # only when a frozen record is written to: the error callers catch is dataclasses'

    return dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise _frozen_error(name)


def _frozen_delattr(self: Any, name: str) -> None:
    raise _frozen_error(name)


class _AsDataclass:
    """``__dataclass_fields__`` and ``__dataclass_params__``: what ``dataclasses`` reads of a dataclass,
    made by ``dataclasses`` itself (from a twin class with the same fields) the first time it is read,
    then stored on the class in place of this descriptor."""

    def __init__(self, attribute: str, fields: "Tuple[Field, ...]", frozen: bool) -> None:
        self.attribute, self.fields, self.frozen = attribute, fields, frozen

    def __get__(self, obj: Any, owner: type) -> Any:
        import dataclasses

        space: "Dict[str, Any]" = {"__annotations__": {f.name: f.type for f in self.fields}}
        for f in self.fields:
            options: "Dict[str, Any]" = {"init": f.init, "repr": f.repr, "compare": f.compare}
            if f.default is not MISSING:
                options["default"] = f.default
            if f.default_factory is not MISSING:
                options["default_factory"] = f.default_factory
            space[f.name] = dataclasses.field(**options)
        twin: type = dataclasses.dataclass(frozen=self.frozen)(type(owner.__name__, (), space))
        for attribute in ("__dataclass_fields__", "__dataclass_params__"):
            type.__setattr__(owner, attribute, getattr(twin, attribute))
        return getattr(owner, self.attribute)
