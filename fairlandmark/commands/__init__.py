"""Subcommands of the ``fairlandmark`` CLI, one module each."""
