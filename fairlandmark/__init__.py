"""fairlandmark: per-keypoint fairness audits for landmark-detection models.

``audit``, ``audit_arrays`` and ``AuditResult`` are loaded on first use, so that the command line starts
(and answers Ctrl-C) before numpy and pandas are imported.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from fairlandmark.exceptions import FairlandmarkWarning, InputError
from fairlandmark.version import __version__

__all__ = ["audit", "audit_arrays", "AuditResult", "InputError", "FairlandmarkWarning", "__version__"]


def _facade(name: str) -> property:
    def get(self: types.ModuleType) -> Any:
        return getattr(importlib.import_module("fairlandmark.audit"), name)

    def ignore(self: types.ModuleType, value: Any) -> None:
        # Importing the submodule fairlandmark.audit binds it here; the name keeps meaning the function.
        pass

    return property(get, ignore)


class _Package(types.ModuleType):
    audit = _facade("audit")
    audit_arrays = _facade("audit_arrays")
    AuditResult = _facade("AuditResult")


sys.modules[__name__].__class__ = _Package
