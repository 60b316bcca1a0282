"""Command line (argparse only). Nothing in the package imports it.

:func:`main` is the console entry point. It loads the commands (and with them numpy and pandas) inside
its own ``try``, so Ctrl-C during start-up prints ``interrupted`` and exits 130 instead of a traceback.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__all__ = ["main"]

EXIT_INTERRUPTED = 130


def _run(argv: list[str] | None = None) -> int:
    """Run ``fairlandmark`` with ``argv`` (default: the process arguments); returns the exit code."""
    try:
        module = importlib.import_module("fairlandmark.cli.main")
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    return int(module.main(argv))


class _Package(types.ModuleType):
    @property
    def main(self) -> Any:
        return _run

    @main.setter
    def main(self, value: Any) -> None:
        # Importing the submodule fairlandmark.cli.main binds it here; the name keeps meaning the entry point.
        pass


sys.modules[__name__].__class__ = _Package
