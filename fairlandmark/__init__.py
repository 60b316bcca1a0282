"""fairlandmark: per-keypoint fairness audits for landmark-detection models."""

__version__ = "0.1.0"

from fairlandmark.audit import AuditResult, audit, audit_arrays  # noqa: E402
from fairlandmark.exceptions import FairlandmarkWarning, InputError  # noqa: E402

__all__ = ["audit", "audit_arrays", "AuditResult", "InputError", "FairlandmarkWarning", "__version__"]
