"""Command line: ``fairlandmark <command>``.

The CLI is a thin layer over the Python API. Each subcommand lives in
``fairlandmark/cli/<name>.py`` with ``register(subparsers)``; the handler
returns an exit code. Bad input (:class:`InputError`) becomes one line on
stderr and exit code 2, with no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from fairlandmark.version import __version__
from fairlandmark.cli._common import FLAG_SPELLINGS
from fairlandmark.exceptions import FairlandmarkWarning, InputError

__all__ = ["main", "build_parser"]

COMMANDS = ("audit", "convert", "demo", "privacy", "compare", "gate", "report")
EXIT_OK, EXIT_RULE_FAILED, EXIT_USAGE = 0, 1, 2
MSG_OS_ERROR = "error: {path}: {reason}; check the path and its permissions"



class _Parser(argparse.ArgumentParser):
    """argparse that exits with 2 and one line, as every usage error should."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fairlandmark", description="Per-keypoint fairness audits of landmark-detection models.")
    parser.add_argument("--version", action="version", version=f"fairlandmark {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        module = importlib.import_module(f"fairlandmark.cli.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage error, --help, --version: return the code, as for every other outcome
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)  # commands print warnings themselves
        try:
            return int(args.handler(args) or 0)
        except InputError as exc:
            sys.stderr.write(f"error: {exc.spelled(FLAG_SPELLINGS)}\n")
            return EXIT_USAGE
        except OSError as exc:  # unreadable input or unwritable output: one line, no traceback
            sys.stderr.write(MSG_OS_ERROR.format(path=exc.filename or "", reason=exc.strerror or exc) + "\n")
            return EXIT_USAGE
        except KeyboardInterrupt:
            sys.stderr.write("interrupted\n")
            return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
