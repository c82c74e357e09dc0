"""The ``actlab`` console script: one entry point, one module per subcommand.

Each subcommand lives in ``actlab/_cli/<name>.py`` and exposes

    HELP: str                                   one line for `actlab --help`
    def add_arguments(p: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int    exit code

Errors a user can fix (bad names, missing files) raise :class:`CLIError` or any
``ValueError``/``FileNotFoundError``; they are printed as one line, no traceback, exit 2.
Database errors that escape the checks made when a database is opened (SQLAlchemy, sqlite3
and Optuna storage errors) are printed the same way, with any password in a URL masked.
Set ACTLAB_DEBUG=1 to see the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from typing import NoReturn

__all__ = ["main", "CLIError", "SUBCOMMANDS"]

# name -> module under actlab._cli (imported only when that subcommand runs, or for --help)
SUBCOMMANDS: dict[str, str] = {
    "ls": "zoo",
    "show": "zoo_show",
    "plot": "plot",
    "demo": "demo",
    "compare": "compare",
    "search": "search",
    "probe": "probe",
    "sparsify": "sparsify",
}


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse's own errors (bad int, unknown choice, missing argument) as one line too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _build_parser() -> argparse.ArgumentParser:
    from actlab import __version__

    parser = _Parser(
        prog="actlab",
        description="actlab: design, evaluate, search and probe activation functions.",
    )
    parser.add_argument("--version", action="version", version=f"actlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, modname in SUBCOMMANDS.items():
        mod = importlib.import_module(f"actlab._cli.{modname}")
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^:/@\s]*:)[^@\s]*@")


def _database_error(e: BaseException) -> str | None:
    """The one-line message of a database driver / storage error, or None for other errors."""
    kinds: list[type[BaseException]] = []
    for module, name in (
        ("sqlalchemy.exc", "SQLAlchemyError"),
        ("sqlite3", "Error"),
        ("optuna.exceptions", "StorageInternalError"),
    ):
        kind = getattr(sys.modules.get(module), name, None)
        if isinstance(kind, type) and issubclass(kind, BaseException):
            kinds.append(kind)
    if not kinds or not isinstance(e, tuple(kinds)):
        return None
    inner = getattr(e, "orig", None) or e.__cause__ or e
    text = next((ln.strip() for ln in str(inner).splitlines() if ln.strip()), type(e).__name__)
    fix = "check the database file or URL (--db / --storage), or pass another one"
    masked = _PASSWORD.sub(r"\1***@", text)
    return f"database error: {masked}; {fix}"


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("actlab: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, FileNotFoundError, KeyError, ImportError, OSError) as e:
        if os.environ.get("ACTLAB_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        msg = _PASSWORD.sub(r"\1***@", msg)  # never print a password of a database URL
        print(f"actlab {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except Exception as e:
        db_msg = _database_error(e)
        if db_msg is None or os.environ.get("ACTLAB_DEBUG"):
            raise
        print(f"actlab {args.command}: error: {db_msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
