"""The audit document: the versioned JSON that ``fairlandmark audit --json`` writes.

One reader for every consumer (reports, figures, compare, gate): :func:`load_audit`
accepts a path, a dict or an :class:`~fairlandmark.audit.AuditResult`, checks the
schema version and the types of the fields the readers rely on, and returns the
dict. The tidy-frame helpers (:func:`keypoint_frame`, :func:`keypoint_mre`, ...)
turn it into DataFrames. The significance fields (``p_value``, ``dp_ci``,
``baseline_mean`` ...) and the ``privacy`` block are optional.

Examples
--------
>>> doc = load_audit({"schema_version": "1.0", "per_keypoint": [], "attributes": [], "keypoints": []})
>>> has_significance(doc)
False
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Union

import pandas as pd

from fairlandmark.exceptions import InputError
from fairlandmark.formatting import num

if TYPE_CHECKING:
    from fairlandmark.audit import AuditResult

__all__ = [
    "AuditDocument", "AuditSource", "SUPPORTED_SCHEMA", "load_audit", "validate_document", "has_significance",
    "keypoint_frame", "keypoint_mre", "overall_row", "summary_row", "privacy_records", "top_gaps",
    "rank_by_evidence",
]

AuditDocument = dict[str, Any]
"""An audit document: the parsed JSON (see docs/json_schema.md)."""

AuditSource = Union["AuditResult", Mapping[str, Any], str, "os.PathLike[str]"]
"""What :func:`load_audit` reads: an AuditResult, a parsed document, or the path of its JSON."""

SUPPORTED_SCHEMA = "1"  # major version this module reads

MSG_NOT_FOUND = "{what} {path}: file not found; give the JSON written by `fairlandmark audit --json PATH`"
MSG_NOT_JSON = "{what} {path}: not valid JSON ({error}); give the file written by `fairlandmark audit --json PATH`"
MSG_NOT_AUDIT = ("{what} {path}: not a fairlandmark audit (no '{key}' key); "
                 "give the file written by `fairlandmark audit --json PATH`")
MSG_SCHEMA = ("{what} {path}: schema_version {version!r} is not supported (this fairlandmark reads {supported}.x); "
              "re-run the audit with this version")
MSG_BAD_SOURCE = "{what}: expected a path, a dict or an AuditResult, got {type}"
MSG_NOT_READABLE = "{what} {path}: cannot be read ({reason}); check the path and its permissions"

MSG_TOO_DEEP = "{what} {path}: the JSON is nested too deeply to be an audit; give the file written by `fairlandmark audit --json PATH`"
MSG_FIELD_TYPE = ("{what} {path}: field {field!r} must be {expected}, got {got}; "
                  "give an unmodified file written by `fairlandmark audit --json PATH`")
MSG_RECORD_TYPE = ("{what} {path}: {field}[{index}] must be {expected}, got {got}; "
                   "give an unmodified file written by `fairlandmark audit --json PATH`")

# Fields that readers index into, and the JSON type each must have when present.
_FIELD_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "schema_version": ((str, int, float), "a version string"),
    "per_keypoint": (list, "a list of records"),
    "attributes": (list, "a list of attribute names"),
    "keypoints": (list, "a list of keypoints"),
    "thresholds": (list, "a list of numbers"),
    "overall": (list, "a list of records"),
    "summary": (list, "a list of records"),
    "per_group": (list, "a list of records"),
    "warnings": (list, "a list of strings"),
    "significance": (dict, "an object"),
    "unit": (str, "a string"),
    "primary_threshold": ((int, float), "a number"),
    "anatomy": (dict, "an object"),
    "curves": (dict, "an object"),
    "measurements": (list, "a list of records"),
}
# Fields readers take with a default when absent; present, they must not be null.
_NOT_NULL = frozenset({"thresholds", "primary_threshold", "unit"})
_RECORD_LISTS = ("per_keypoint", "overall", "summary", "per_group", "measurements")

_REQUIRED = ("schema_version", "per_keypoint", "attributes", "keypoints")



def _json_type(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


_TEXT_FIELDS = frozenset({"attribute", "family", "group", "group_high", "group_low", "direction", "analysis",
                          "target", "measurement", "kind", "unit", "description", "dp_of"})
_LABEL_FIELDS = frozenset({"keypoint", "max_dp_keypoint"})


def _two_of(value: object, kinds: tuple[type, ...]) -> bool:
    """Whether ``value`` is a list of two ends, each null or of ``kinds`` (true/false never counts as a number)."""
    return isinstance(value, list) and len(value) == 2 and all(
        end is None or (isinstance(end, kinds) and not isinstance(end, bool)) for end in value)


def _record_value_problem(field: str, value: object) -> str | None:
    """What a record's field must hold when ``value`` does not fit (None when it fits); null always fits."""
    if value is None:
        return None
    if field in _TEXT_FIELDS:
        return None if isinstance(value, str) else "a string"
    if field in _LABEL_FIELDS:
        return None if isinstance(value, (str, int)) and not isinstance(value, bool) else "a keypoint label"
    if field == "pair":  # two group labels: readers take both ends and look them up
        return None if _two_of(value, (str, int, float)) else "a list of two group labels"
    if field.endswith("_ci"):  # an interval: two numbers (null where it could not be computed)
        return None if _two_of(value, (int, float)) else "a list of two numbers"
    if isinstance(value, list):
        return None if field == "classes" else "a number"
    if isinstance(value, dict):  # per-group and per-threshold maps; the covariate-adjusted gaps (--adjust)
        return None if "_by_" in field or field == "adjusted" or field.endswith("_test") else "a number"
    if isinstance(value, bool):
        return None if field in _BOOL_FIELDS or field.endswith("significant") else "a number"
    if isinstance(value, (int, float)):
        return None if field not in _BOOL_FIELDS else "true/false"
    return "a number"


_BOOL_FIELDS = frozenset({"significant", "mre_gap_significant", "in_dp", "exceeds_uncertainty", "leak"})


def validate_document(doc: Mapping[str, Any], *, what: str = "audit", path: str = "(dict)") -> AuditDocument:
    """Check the structure every reader relies on; return the document as a dict.

    Raises :class:`InputError` naming the first field of the wrong type, so a
    hand-edited or truncated document gets one clear line instead of a crash
    deep inside a report.

    Examples
    --------
    >>> validate_document({"schema_version": "1.0", "per_keypoint": "x", "attributes": [], "keypoints": []})
    Traceback (most recent call last):
    ...
    fairlandmark.exceptions.InputError: audit (dict): field 'per_keypoint' must be a list of records, got a string; give an unmodified file written by `fairlandmark audit --json PATH`
    """
    if not isinstance(doc, Mapping):
        raise InputError(MSG_NOT_AUDIT.format(what=what, path=path, key="schema_version"))
    for key in _REQUIRED:
        if key not in doc:
            raise InputError(MSG_NOT_AUDIT.format(what=what, path=path, key=key))
    for key, (types, expected) in _FIELD_TYPES.items():
        value = doc.get(key)
        if value is None and key not in _REQUIRED and (key not in _NOT_NULL or key not in doc):
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            raise InputError(MSG_FIELD_TYPE.format(what=what, path=path, field=key, expected=expected,
                                                   got=_json_type(value)))
    for key in _RECORD_LISTS:
        for i, rec in enumerate(doc.get(key) or []):
            if not isinstance(rec, Mapping):
                raise InputError(MSG_RECORD_TYPE.format(what=what, path=path, field=key, index=i,
                                                        expected="an object", got=_json_type(rec)))
    for key in _RECORD_LISTS:
        for i, rec in enumerate(doc.get(key) or []):
            for field, value in rec.items():
                problem = _record_value_problem(str(field), value)
                if problem:
                    raise InputError(MSG_RECORD_TYPE.format(what=what, path=path, field=key, index=i,
                                                            expected=f"{problem} in {field!r}",
                                                            got=_json_type(value)))
    primary = doc.get("primary_threshold")
    if primary is not None and not (math.isfinite(primary) and primary > 0):
        raise InputError(MSG_FIELD_TYPE.format(what=what, path=path, field="primary_threshold",
                                               expected="a positive number", got=primary))
    for i, value in enumerate(doc.get("thresholds") or []):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise InputError(MSG_RECORD_TYPE.format(what=what, path=path, field="thresholds", index=i,
                                                    expected="a positive number", got=_json_type(value)))
    for i, name in enumerate(doc["attributes"]):
        if not isinstance(name, str):
            raise InputError(MSG_RECORD_TYPE.format(what=what, path=path, field="attributes", index=i,
                                                    expected="a string", got=_json_type(name)))
    version = str(doc["schema_version"])
    if version.split(".")[0] != SUPPORTED_SCHEMA:
        raise InputError(MSG_SCHEMA.format(what=what, path=path, version=version, supported=SUPPORTED_SCHEMA))
    return dict(doc)


def load_audit(source: object, *, what: str = "audit") -> AuditDocument:
    """Return the audit document (a dict) from a path, a dict or an AuditResult.

    Parameters
    ----------
    source : str, os.PathLike, dict or AuditResult
        The JSON file written by ``fairlandmark audit --json``, its parsed
        dict, or the result object itself.
    what : str, default "audit"
        How the source is named in error messages (e.g. "baseline").

    Returns
    -------
    dict

    Raises
    ------
    InputError
        Missing file, invalid JSON, not an audit, or an unsupported schema.

    Examples
    --------
    >>> load_audit({"schema_version": "1.0", "per_keypoint": [], "attributes": [], "keypoints": []})["schema_version"]
    '1.0'
    """
    path = "(dict)"
    if hasattr(source, "to_dict") and not isinstance(source, Mapping):
        doc = source.to_dict()
    elif isinstance(source, Mapping):
        doc = dict(source)
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            with open(path, encoding="utf-8") as handle:
                doc = json.load(handle)
        except FileNotFoundError:
            raise InputError(MSG_NOT_FOUND.format(what=what, path=path)) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(MSG_NOT_JSON.format(what=what, path=path, error=str(exc).splitlines()[0])) from None
        except RecursionError:
            raise InputError(MSG_TOO_DEEP.format(what=what, path=path)) from None
        except OSError as exc:
            raise InputError(MSG_NOT_READABLE.format(what=what, path=path, reason=exc.strerror or exc)) from None
    else:
        raise InputError(MSG_BAD_SOURCE.format(what=what, type=type(source).__name__))
    doc = validate_document(doc, what=what, path=path)
    doc.setdefault("_source", path)
    return doc


def has_significance(doc: AuditDocument) -> bool:
    """True when the audit carries permutation p-values."""
    return any(rec.get("p_value") is not None for rec in doc.get("per_keypoint", []))


def _record_mre(rec: Mapping[str, Any]) -> tuple[float, float]:
    """Per-keypoint MRE over all images of a record, and its std if the audit gives one.

    Uses the record's ``mre`` when present, otherwise the mean of the group
    MREs weighted by the number of predictions present in each group.
    """
    if rec.get("mre") is not None:
        return num(rec["mre"]), num(rec.get("mre_std"))
    total = weight = 0.0
    n_by, miss_by = rec.get("n_by_group") or {}, rec.get("n_missing_by_group") or {}
    for group, value in (rec.get("mre_by_group") or {}).items():
        v = num(value)
        w = num(n_by.get(group, 1)) - num(miss_by.get(group, 0) or 0)
        if math.isnan(v) or math.isnan(w) or w <= 0:
            continue
        total += v * w
        weight += w
    return (total / weight if weight else math.nan), math.nan


def keypoint_frame(doc: AuditDocument) -> pd.DataFrame:
    """One tidy row per (attribute, keypoint) from the audit document.

    Columns: ``attribute, keypoint, family, dp, dp_std, dp_low, dp_high,
    baseline_mean, baseline_std, dp_above_chance, p_value, p_adjusted,
    significant, pair, mre, mre_gap, mre_gap_p_adjusted``, and the signed gap
    of the reported pair with its interval (``gap, gap_low, gap_high``) when
    the audit has them. Significance columns are NaN (and ``significant``
    False) when the audit has none. ``pair`` is empty when DP is 0 (no group
    is ahead, so naming a pair would mislead).

    Examples
    --------
    >>> doc = {"per_keypoint": [{"attribute": "sex", "keypoint": 1, "dp": 0.1, "pair": ["F", "M"],
    ...        "mre_by_group": {"F": 1.0, "M": 3.0}, "n_by_group": {"F": 1, "M": 3}}]}
    >>> float(keypoint_frame(doc)["mre"].iloc[0])
    2.5
    """
    rows = []
    for rec in doc.get("per_keypoint", []):
        ci = rec.get("dp_ci") or [None, None]
        mre, mre_std = _record_mre(rec)
        pair = rec.get("pair")
        dp = num(rec.get("dp"))
        gap_ci = rec.get("gap_ci") or [None, None]
        rows.append({
            "attribute": rec.get("attribute"), "keypoint": rec.get("keypoint"), "family": rec.get("family") or "",
            "dp": dp, "dp_std": num(rec.get("dp_std")),
            "dp_low": num(ci[0]), "dp_high": num(ci[1]),
            "gap": num(rec.get("gap")), "gap_low": num(gap_ci[0]), "gap_high": num(gap_ci[1]),
            "baseline_mean": num(rec.get("baseline_mean")), "baseline_std": num(rec.get("baseline_std")),
            "dp_above_chance": dp - num(rec.get("baseline_mean")),
            "p_value": num(rec.get("p_value")), "p_adjusted": num(rec.get("p_adjusted")),
            "significant": bool(rec.get("significant") or False),
            "pair": " vs ".join(str(p) for p in pair) if pair and dp > 0 else "",
            "mre": mre, "mre_std": mre_std,
            "mre_gap": num(rec.get("mre_gap")), "mre_gap_p_adjusted": num(rec.get("mre_gap_p_adjusted")),
        })
    columns = ["attribute", "keypoint", "family", "dp", "dp_std", "dp_low", "dp_high", "gap", "gap_low",
               "gap_high", "baseline_mean", "baseline_std", "dp_above_chance", "p_value", "p_adjusted", "significant", "pair", "mre", "mre_std", "mre_gap",
               "mre_gap_p_adjusted"]
    return pd.DataFrame(rows, columns=columns)


def keypoint_mre(doc: AuditDocument) -> pd.DataFrame:
    """Per-keypoint MRE over all images (one row per keypoint, in audit order).

    Taken from the first single attribute of the audit (every attribute
    covers every image, so any one gives the same keypoint MRE).
    """
    frame = keypoint_frame(doc)
    if frame.empty:
        return frame[["keypoint", "family", "mre", "mre_std"]]
    attrs = [a for a in doc.get("attributes", []) if "&" not in str(a)] or list(frame["attribute"].unique())
    sub = frame[frame["attribute"] == attrs[0]]
    return sub[["keypoint", "family", "mre", "mre_std"]].reset_index(drop=True)


def overall_row(doc: AuditDocument, family: str = "all") -> dict[str, Any]:
    """The ``overall`` record of one family (``{}`` if absent)."""
    for row in doc.get("overall") or []:
        if row.get("family") == family:
            return row
    return {}


def summary_row(doc: AuditDocument, attribute: str, family: str = "all") -> dict[str, Any]:
    for row in doc.get("summary") or []:
        if row.get("attribute") == attribute and row.get("family") == family:
            return row
    return {}


def privacy_records(doc: AuditDocument) -> list[dict[str, Any]]:
    """Flatten the optional ``privacy`` block into records with an ``attribute``.

    Accepts ``{"attributes": {name: {...}}}``, ``{name: {...}}``, a list of
    records, or a single record; returns the records that carry a
    ``balanced_accuracy``.
    """
    block = doc.get("privacy")
    out = []

    def visit(obj: object, name: str | None = None) -> None:
        if isinstance(obj, Mapping):
            if "balanced_accuracy" in obj:
                rec = dict(obj)
                rec.setdefault("attribute", name)
                out.append(rec)
                return
            for key, value in obj.items():
                if isinstance(value, (Mapping, list)):
                    visit(value, key if name is None or key not in ("attributes", "results") else name)
        elif isinstance(obj, list):
            for item in obj:
                visit(item, name)

    if block:
        visit(block)
    return out


def rank_by_evidence(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of a :func:`keypoint_frame` ordered by the evidence for a gap.

    Adjusted p ascending (missing last), then DP above the chance DP
    descending, then DP descending. Without significance this is the DP order.
    Raw DP alone would rank the intersection first (its chance DP is larger,
    it has more and smaller groups) and hide single-attribute findings.

    Examples
    --------
    >>> f = pd.DataFrame({"dp": [0.3, 0.1, 0.2], "dp_above_chance": [0.1, 0.05, 0.15],
    ...                   "p_adjusted": [0.2, 0.01, 0.01]})
    >>> rank_by_evidence(f)["dp"].tolist()
    [0.2, 0.1, 0.3]
    """
    if frame.empty:
        return frame
    keys = pd.DataFrame({"p": frame["p_adjusted"].fillna(math.inf),
                         "above": -frame["dp_above_chance"].fillna(-math.inf),
                         "dp": -frame["dp"].fillna(-math.inf)}, index=frame.index)
    order = keys.sort_values(["p", "above", "dp"], kind="stable").index
    return frame.loc[order]


def top_gaps(doc: AuditDocument, top: int = 5) -> pd.DataFrame:
    """The ``top`` (attribute, keypoint) rows with the strongest evidence of a gap (:func:`rank_by_evidence`)."""
    frame = keypoint_frame(doc)
    return rank_by_evidence(frame.dropna(subset=["dp"])).head(top)
