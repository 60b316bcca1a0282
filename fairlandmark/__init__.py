"""fairlandmark: per-keypoint fairness audits for landmark-detection models.

The public names are loaded on first use, so that the command line starts (and answers Ctrl-C) before
numpy and pandas are imported.
"""

from __future__ import annotations

import importlib
from typing import Any

from fairlandmark.exceptions import FairlandmarkWarning, InputError
from fairlandmark.version import __version__

__all__ = ["audit", "audit_arrays", "AuditResult", "InputError", "FairlandmarkWarning", "__version__"]

_LAZY = {"audit": "fairlandmark.audit", "audit_arrays": "fairlandmark.audit", "AuditResult": "fairlandmark.audit"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fairlandmark' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
