"""Shared fixtures.

``shared_data`` is the folder of real public annotation files (ISBI 2015
cephalograms, Digital Hand Atlas). It lives beside the repository
(``../shared/data``; in CI the repository is cloned with ``shared/`` beside
it) or wherever ``FAIRLANDMARK_SHARED_DATA`` points. Tests that need it are
skipped, with the reason, when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA_ENV = "FAIRLANDMARK_SHARED_DATA"


def shared_data_dir():
    """The shared data folder: ``$FAIRLANDMARK_SHARED_DATA``, else ``<repo>/../shared/data``."""
    env = os.environ.get(SHARED_DATA_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _no_terminal_width_from_the_environment(monkeypatch):
    """The command line's console takes its width from ``COLUMNS``. Under pytest-xdist the workers saw
    COLUMNS=80, and at 80 columns a note wraps inside the phrase a test looks for. Every test sees the width
    of a log file (tests/test_console_width.py sets COLUMNS itself, in its subprocesses' environment)."""
    monkeypatch.delenv("COLUMNS", raising=False)
    # Whether standard error counts as a terminal (progress displays) is the test's to say, not the shell's.
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)


@pytest.fixture(scope="session")
def shared_data():
    """Path of the shared data folder; skips the test when it is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data folder not found at {path}; set {SHARED_DATA_ENV} to run this test")
    return path


@pytest.fixture(scope="session")
def make_doc():
    """Factory of synthetic audit documents (see ``_report_fixtures.make_doc``)."""
    from _report_fixtures import make_doc as factory

    return factory


@pytest.fixture(scope="session")
def copy_doc():
    """Deep copy of an audit document."""
    from _report_fixtures import copy_doc as copier

    return copier
