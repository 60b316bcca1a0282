"""Command line: ``fairlandmark <command>``.

The CLI is a thin layer over the Python API. Each subcommand lives in
``fairlandmark/cli/<name>.py`` with ``register(subparsers)``; the handler
returns an exit code. Bad input (:class:`InputError`) becomes one line on
stderr and exit code 2, with no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from collections.abc import Sequence
from typing import NoReturn, TextIO

from fairlandmark.version import __version__
from fairlandmark.cli._common import FLAG_SPELLINGS
from fairlandmark.exceptions import FairlandmarkWarning, InputError, spell_options
from fairlandmark.files import OutputSet

__all__ = ["main", "build_parser"]

COMMANDS = ("audit", "convert", "demo", "privacy", "compare", "gate", "report", "plan")
EXIT_OK, EXIT_RULE_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
MSG_CREATED_FOLDER = "note: created folder {folder} for the outputs"
MSG_MEMORY = ("error: out of memory; reduce --permutations, --bootstrap or --baseline-repeats, audit fewer "
              "attributes or keypoints, or use a machine with more memory")
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


class Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C so that staged outputs are deleted, not left half-written."""


@contextmanager
def _terminate_as_exception() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # signals can only be caught there
        yield
        return

    def raise_terminated(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    if isinstance(message, FairlandmarkWarning):
        text = message.spelled(FLAG_SPELLINGS)
    elif issubclass(category, FairlandmarkWarning):
        text = spell_options(str(message), FLAG_SPELLINGS)
    else:
        text = f"{category.__name__}: {message}"
    sys.stderr.write(f"warning: {text}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns the exit code (0 ok, 1 gate failed, 2 bad input, 130 Ctrl-C).

    Every output of a command is staged and renamed into place only when the command succeeds
    (:class:`fairlandmark.files.OutputSet`): on an error, Ctrl-C or SIGTERM none is written.
    """
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # usage error, --help, --version: return the code, as for every other outcome
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
        if not getattr(args, "handler", None):
            parser.print_help()
            return EXIT_USAGE
        with warnings.catch_warnings(), _terminate_as_exception():
            # Commands print the notes of their results themselves; a FairlandmarkWarning that reaches here
            # anyway is shown as one plain "warning:" line, options spelled as flags.
            warnings.simplefilter("default", FairlandmarkWarning)
            warnings.showwarning = _show_warning
            try:
                with OutputSet() as outputs:
                    code = int(args.handler(args) or 0)
                for folder in outputs.created_folders:
                    sys.stderr.write(MSG_CREATED_FOLDER.format(folder=folder) + "\n")
                return code
            except InputError as exc:
                sys.stderr.write(f"error: {exc.spelled(FLAG_SPELLINGS)}\n")
                return EXIT_USAGE
            except MemoryError:
                sys.stderr.write(MSG_MEMORY + "\n")
                return EXIT_USAGE
            except OSError as exc:  # unreadable input or unwritable output: one line, no traceback
                sys.stderr.write(MSG_OS_ERROR.format(path=exc.filename or "", reason=exc.strerror or exc) + "\n")
                return EXIT_USAGE
            except Terminated:
                sys.stderr.write("terminated\n")
                return EXIT_TERMINATED
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
