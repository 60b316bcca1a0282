"""fairlandmark: per-keypoint fairness audits for landmark-detection models."""

from fairlandmark.audit import AuditResult, audit, audit_arrays
from fairlandmark.exceptions import FairlandmarkWarning, InputError
from fairlandmark.version import __version__

__all__ = ["audit", "audit_arrays", "AuditResult", "InputError", "FairlandmarkWarning", "__version__"]
