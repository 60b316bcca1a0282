"""Command line (argparse only). Nothing in the package imports it.

:func:`main` is the console entry point. It loads the commands (and with them numpy and pandas) inside
its own ``try``, so Ctrl-C during start-up prints ``interrupted`` and exits 130 instead of a traceback.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["main"]

EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    """Run ``fairlandmark`` with ``argv`` (default: the process arguments); returns the exit code."""
    try:
        module = importlib.import_module("fairlandmark.cli.main")
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    finally:
        # Importing the submodule binds the package attribute 'main' to it; keep this function there.
        globals()["main"] = main
    return int(module.main(argv))
