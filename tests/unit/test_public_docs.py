"""Every public name of dumplib (what `dumplib.__all__` exports, and the public methods and properties
of its classes) says what it is: a docstring of its own or one inherited from the method it overrides."""
import inspect

import dumplib


def _undocumented():
    missing = []
    for name in dumplib.__all__:
        obj = getattr(dumplib, name)
        if name.startswith("__") or not (inspect.isclass(obj) or callable(obj)):
            continue
        if not inspect.getdoc(obj):
            missing.append(name)
        if not inspect.isclass(obj) or issubclass(obj, BaseException) and obj.__module__ == "builtins":
            continue
        for attr, value in vars(obj).items():
            if attr.startswith("_") or not (inspect.isfunction(value) or isinstance(value, (property, classmethod))):
                continue
            member = getattr(obj, attr)
            doc = inspect.getdoc(member) if not isinstance(value, property) else (value.__doc__ or _inherited(obj, attr))
            if not doc:
                missing.append(f"{name}.{attr}")
    return missing


def _inherited(cls, attr):
    for base in cls.__mro__[1:]:
        prop = vars(base).get(attr)
        if isinstance(prop, property) and prop.__doc__:
            return prop.__doc__
    return None


def test_every_public_name_has_a_docstring():
    assert _undocumented() == []


def test_the_check_sees_a_missing_docstring():
    class Bare:
        def method(self):
            pass

    dumplib.__all__.append("Bare")
    dumplib.Bare = Bare  # type: ignore[attr-defined]
    try:
        assert "Bare" in _undocumented() and "Bare.method" in _undocumented()
    finally:
        dumplib.__all__.remove("Bare")
        del dumplib.Bare
