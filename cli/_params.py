"""Parameter declarations the fast parser and typer both read, written without importing typer.

A quick-parsed command (dump, estimate, info, ps) declares its parameters with Arg and Opt here, as
it would with typer.Argument and typer.Option; app.py turns them into typer's only when typer is
needed (--help, a mistake), and _fastparse.py reads them directly otherwise.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Tuple


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
