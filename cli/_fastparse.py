"""The typer-free parser of a complete, valid command line (app.py's module docstring says why).

A quick-parsed command (dump, estimate, info, ps) declares its parameters with Arg and Opt here, as
it would with typer.Argument and typer.Option; app.py turns them into typer's only when typer is
needed (--help, a mistake). quick_parse reads the same declarations and returns the keyword arguments
typer would have given it, or None for anything it is not sure of (--help, a mistake, an option with
a callback...): then app.py hands the whole command line to typer, whose messages users get.
tests/unit/test_cli_parse.py checks every answer against typer's own parse.
"""
from __future__ import annotations

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

class Param:
    """What typer.Argument / typer.Option take, as a plain record: typer is imported only when needed."""

    #: typer keywords that change only --help, so quick_parse may ignore them; any other keyword
    #: (a callback, a count, a range...) sends the command line to typer.
    HELP_ONLY = frozenset({"help", "metavar", "show_default", "rich_help_panel", "hidden"})

    def __init__(self, typer_name: str, default: Any, decls: Tuple[str, ...], options: Dict[str, Any]) -> None:
        self.typer_name, self.default, self.decls, self.options = typer_name, default, decls, options

    @property
    def is_option(self) -> bool:
        """An option (``--kind``), not a positional argument."""
        return self.typer_name == "Option"

    @property
    def quick(self) -> bool:
        """The fast parser can read this parameter exactly as typer would."""
        return self.options.keys() <= self.HELP_ONLY

    def to_typer(self, typer: Any) -> Any:
        """The typer.Argument or typer.Option this stands for (*typer*: the module, imported by the caller)."""
        return getattr(typer, self.typer_name)(self.default, *self.decls, **self.options)


def Arg(default: Any, **options: Any) -> Any:  # noqa: N802 - reads like typer.Argument
    """A positional argument, declared as typer.Argument would be."""
    return Param("Argument", default, (), options)


def Opt(default: Any, *decls: str, **options: Any) -> Any:  # noqa: N802 - reads like typer.Option
    """An option, declared as typer.Option would be."""
    return Param("Option", default, decls, options)


def declarations(func: Callable[..., Any]) -> Dict[str, Any]:
    """Parameter name -> its Arg/Opt declaration, in order, read without the inspect module (start-up)."""
    code = func.__code__
    return dict(zip(code.co_varnames[: code.co_argcount], func.__defaults__ or ()))


JSON_HELP = "Print the result (or the error) as one JSON object."
DEBUG_HELP = "Show a traceback on errors."
JsonOpt = Opt(False, "--json", help=JSON_HELP)
DebugOpt = Opt(False, "--debug", help=DEBUG_HELP)


#: Annotations (strings, under `from __future__ import annotations`) that quick_parse converts itself.
_QUICK_TYPES: Dict[str, type] = {"str": str, "Optional[str]": str, "bool": bool, "int": int, "Optional[int]": int}


def quick_parse(func: Callable[..., None], args: List[str]) -> Optional[Dict[str, Any]]:
    """*func*'s keyword arguments from *args*, parsed as click would; None leaves it to typer.

    Only complete, valid command lines are taken: a missing argument, an unknown option, --help, a
    value that is not plainly what the parameter's type wants, all go to typer for its messages.
    """
    specs = declarations(func)
    types = {n: _QUICK_TYPES.get(str(func.__annotations__.get(n))) for n in specs}
    if not all(isinstance(s, Param) and s.quick for s in specs.values()) or None in types.values():
        return None
    values: Dict[str, Any] = {n: spec.default for n, spec in specs.items()}
    by_decl = {d: n for n, spec in specs.items() if spec.is_option for d in spec.decls}
    positional = [n for n, spec in specs.items() if not spec.is_option]
    given: List[str] = []
    rest = iter(args)
    for arg in rest:
        if arg == "--":
            given.extend(rest)
        elif arg == "-" or not arg.startswith("-"):
            given.append(arg)
        else:
            decl, inline = _split_option(arg)
            name = by_decl.get(decl)
            if name is None:
                return None
            if types[name] is bool:
                if inline is not None:
                    return None
                values[name] = True
                continue
            value = _convert(inline if inline is not None else next(rest, None), types[name])
            if value is None:
                return None
            values[name] = value
    if len(given) > len(positional):
        return None
    for name, text in zip(positional, given):
        values[name] = _convert(text, types[name])
        if values[name] is None:
            return None
    if any(v is ... for v in values.values()):  # a required argument is missing
        return None
    return values


def _split_option(arg: str) -> Tuple[str, Optional[str]]:
    """`--kind=full` -> (`--kind`, `full`); `-kfull` -> (`-k`, `full`); `--fit` -> (`--fit`, None)."""
    if arg.startswith("--"):
        decl, eq, value = arg.partition("=")
        return decl, (value if eq else None)
    return arg[:2], (arg[2:] or None)


def _convert(text: Optional[str], kind: Optional[type]) -> Any:
    if text is None:
        return None
    if kind is int:
        digits = text[1:] if text.startswith("-") else text
        return int(text) if digits.isascii() and digits.isdigit() else None
    return text


#: Options that may stand alone as a flag or take a value: a bare ``--snapshot`` means ``--snapshot=on``.
FLAG_OR_VALUE = {"--snapshot": "on"}


def bare_flags(args: List[str]) -> List[str]:
    """Give each bare FLAG_OR_VALUE option its value, up to a `--` (after it come a launched command's words).

    Applied before either parser: click has no option that is both a flag and a valued option."""
    out: List[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return out + args[i:]
        out.append(f"{arg}={FLAG_OR_VALUE[arg]}" if arg in FLAG_OR_VALUE else arg)
    return out


def wants_json(args: List[str]) -> bool:
    """--json among the options (not in a command after ``--``, which belongs to that command).

    ``--json=...`` counts too: a user who wrote it wants JSON, even though click refuses the value."""
    options = args[: args.index("--")] if "--" in args else args
    return any(arg == "--json" or arg.startswith("--json=") for arg in options)
