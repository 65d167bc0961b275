"""Records behave as the dataclasses they stand in for (dumplib/_record.py), judged by `dataclasses` itself.

Each class is declared twice from the same body, once with ``@dataclasses.dataclass`` and once with
``@record``; what a caller sees (construction, defaults, repr, equality, hashing, freezing,
``dataclasses.fields/asdict/replace``, the signature) must be the same.
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
from typing import Any, List, Optional, Tuple

import pytest

import dumplib
from dumplib import _record
from dumplib._record import field, record


def _twins(frozen: bool) -> Tuple[type, type]:
    """The same class body as a dataclass and as a record."""
    made = []
    for decorate, make_field in ((dataclasses.dataclass(frozen=frozen), dataclasses.field),
                                 (record(frozen=frozen), field)):
        class Sample:
            """A record with every kind of field dumplib's records use."""

            start: int
            name: str
            size: Optional[int] = None
            tags: Tuple[str, ...] = ()
            items: List[int] = make_field(default_factory=list)
            region: Any = make_field(default=None, repr=False, compare=False)
            derived: int = make_field(init=False, repr=False)

            def __post_init__(self) -> None:
                object.__setattr__(self, "derived", self.start * 2)

        made.append(decorate(Sample))
    return made[0], made[1]


@pytest.fixture(params=["binding", "compiled"])
def phase(request, monkeypatch):
    """A record's first instances bind their arguments in _record; later ones use the compiled
    __init__: both must behave as the dataclass does."""
    monkeypatch.setattr(_record, "COMPILE_AFTER", 10 ** 9 if request.param == "binding" else 1)
    return request.param


@pytest.mark.parametrize("frozen", [True, False])
def test_a_record_is_built_shown_and_compared_as_its_dataclass_twin(frozen, phase):
    dc, rec = _twins(frozen)
    for args, kwargs in (((1, "a"), {}), ((1, "a", 5), {"tags": ("x",)}), ((2,), {"name": "b", "items": [1]}),
                         ((1, "a"), {"region": object()})):
        d, r = dc(*args, **kwargs), rec(*args, **kwargs)
        assert repr(r) == repr(d)
        assert vars(r) == vars(d)
        assert (r == rec(*args, **kwargs)) == (d == dc(*args, **kwargs))
    assert (rec(1, "a", region=1) == rec(1, "a", region=2)) and (dc(1, "a", region=1) == dc(1, "a", region=2))
    assert rec(1, "a") != rec(2, "a") and rec(1, "a") != dc(1, "a")  # another class is never equal
    assert rec(1, "a").items is not rec(1, "a").items  # a fresh default from the factory each time
    if phase == "compiled":  # the binding __init__ shows (*args, **kwargs) until it is replaced
        assert str(inspect.signature(rec)) == str(inspect.signature(dc))
    assert rec.__match_args__ == dc.__match_args__
    for bad in (((), {}), ((1, "a"), {"derived": 3}), ((1, "a"), {"nope": 1}), ((1, "a", 3, (), [], None, 9), {}),
                ((1, "a"), {"start": 1})):
        with pytest.raises(TypeError):
            dc(*bad[0], **bad[1])
        with pytest.raises(TypeError):
            rec(*bad[0], **bad[1])


def test_a_frozen_record_refuses_assignment_and_hashes_as_a_frozen_dataclass(phase):
    made = []
    for decorate, make_field in ((dataclasses.dataclass(frozen=True), dataclasses.field), (record(frozen=True), field)):
        class Point:
            x: int
            y: str = "a"
            label: Optional[str] = make_field(default=None, compare=False)

        made.append(decorate(Point))
    dc, rec = made
    r = rec(1, label="one")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.x = 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        del r.y
    assert r == rec(1, label="other") and hash(r) == hash(rec(1, label="other")) == hash(dc(1, label="x"))
    assert len({rec(1), rec(1), rec(2)}) == 2

    @record()
    class Mutable:
        x: int

    m = Mutable(1)
    m.x = 3
    assert m.x == 3 and m == Mutable(3)
    with pytest.raises(TypeError):
        hash(m)  # as a non-frozen dataclass with __eq__: unhashable


@pytest.mark.parametrize("frozen", [True, False])
def test_dataclasses_reads_a_record_as_a_dataclass(frozen, phase):
    dc, rec = _twins(frozen)
    r = rec(1, "a", items=[rec(2, "b")])
    d = dc(1, "a", items=[dc(2, "b")])
    assert dataclasses.is_dataclass(r) and dataclasses.is_dataclass(rec)
    assert [(f.name, f.init, f.repr, f.compare) for f in dataclasses.fields(r)] == \
        [(f.name, f.init, f.repr, f.compare) for f in dataclasses.fields(d)]
    assert dataclasses.asdict(r) == dataclasses.asdict(d) == _record.asdict(r)
    assert dataclasses.replace(r, name="z") == _record.replace(r, name="z") == rec(1, "z", items=[rec(2, "b")])
    with pytest.raises(ValueError):
        _record.replace(r, derived=1)
    assert copy.deepcopy(r) == r


def test_a_field_without_a_default_after_one_with_a_default_is_refused():
    with pytest.raises(TypeError):
        @record()
        class Bad:
            first: int = 0
            second: int
    with pytest.raises(ValueError):
        @record()
        class Shared:
            items: List[int] = []  # noqa: RUF012 - the mistake under test: one list for every instance


def test_the_public_results_are_frozen_dataclasses_as_documented():
    # docs/api.md: "DumpResult: a frozen dataclass"; ProcessInfo and SizeEstimate the same.
    info = dumplib.ProcessInfo(7, "x")
    result = dumplib.DumpResult("/x.core", 7, "x", "mini", None, 10, 0.5, "linux-elfcore")
    for value in (info, result, dumplib.SizeEstimate(7, "mini", None, 10)):
        assert dataclasses.is_dataclass(value)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, dataclasses.fields(value)[0].name, None)
    assert dataclasses.replace(result, size=11).size == 11
    assert dataclasses.asdict(result)["path"] == "/x.core" == result.to_dict()["path"]
    assert info.to_dict() == dataclasses.asdict(info)
    assert pickle.loads(pickle.dumps(result)) == result and copy.copy(info) == info


def test_the_compiled_init_takes_over_at_the_threshold(monkeypatch):
    monkeypatch.setattr(_record, "COMPILE_AFTER", 3)

    @record()
    class Counted:
        x: int
        y: int = 2

    first = Counted.__init__
    made = [Counted(1), Counted(x=1)]
    assert Counted.__init__ is first and str(inspect.signature(Counted)).startswith("(*args")
    made.append(Counted(1, y=2))
    assert Counted.__init__ is not first and str(inspect.signature(Counted)) == "(x: 'int', y: 'int' = 2) -> None"
    assert made == [Counted(1)] * 3 and Counted(4).y == 2
