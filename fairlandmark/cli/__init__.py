"""Command line (argparse only). Nothing in the package imports it."""

from fairlandmark.cli.main import main

__all__ = ["main"]
