"""The fairness gate: rules on an audit JSON, for CI.

Rules come from TOML or from keyword arguments (the CLI flags). In
``fairlandmark.toml`` they sit in a ``[gate]`` table; in ``pyproject.toml``
in ``[tool.fairlandmark.gate]``::

    [gate]
    max_dp = 0.10                   # DP of every keypoint x attribute
    max_dp_only_significant = true  # ... counted only where significant after correction
    max_mean_dp = 0.05              # mean DP over keypoints, per attribute
    max_mre = 2.0                   # overall MRE, in the audit's unit
    min_sdr = 0.80                  # overall SDR at the primary threshold
    # min_sdr = {"2" = 0.80, "4" = 0.97}   # or per threshold
    max_privacy_balanced_accuracy = 0.65   # attribute inference from the errors
    baseline = "audits/main.json"   # relative to this file
    max_dp_regression = 0.02        # DP increase per keypoint x attribute vs baseline
    max_mean_dp_regression = 0.01
    max_mre_regression = 0.05
    attributes = ["sex", "age_group"]   # default: every attribute of the audit

Every check is a comparison with a tolerance of 1e-9, so a value equal to
its limit passes. A value the audit could not compute (null in its JSON: no
DP where fewer than two groups are large enough, no MRE where every
prediction is missing) fails its check: the gate passes only on what it
could check. :func:`run_gate` returns a :class:`GateResult` with one
:class:`Check` per rule x attribute x keypoint (or per rule x attribute, or
per rule), JUnit XML (:meth:`GateResult.to_junit`) and a Markdown summary.

Examples
--------
>>> import numpy as np, fairlandmark
>>> rng = np.random.default_rng(0)
>>> true = rng.uniform(0, 100, (40, 3, 2)); pred = true + rng.normal(0, 10, true.shape)
>>> res = fairlandmark.audit_arrays(pred, true, {"sex": ["F", "M"] * 20}, spacing_mm=0.1)
>>> result = run_gate(res, GateRules(max_dp=1.0, max_mre=100.0))
>>> result.passed, len(result.checks)
(True, 4)
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import pandas as pd

from fairlandmark.exceptions import InputError
from fairlandmark.document import (AuditDocument, AuditSource, keypoint_frame, load_audit, overall_row,
                                   privacy_records, summary_row)
from fairlandmark.files import read_toml
from fairlandmark.formatting import fmt, num, threshold_key

__all__ = ["GateRules", "Check", "GateResult", "load_rules", "find_config", "run_gate", "RULES", "tool_table",
           "EXIT_PASS", "EXIT_FAIL", "EXIT_USAGE"]

EXIT_PASS, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
TOLERANCE = 1e-9
CONFIG_NAMES = ("fairlandmark.toml", "pyproject.toml")

MSG_CONFIG_MISSING = "{path}: config file not found; give an existing fairlandmark.toml or pyproject.toml"
MSG_UNKNOWN_KEY = "{path}: unknown key {key!r} in {table}; known keys: {known}"
MSG_OUTSIDE = "{path}: {key!r} must be inside the {table} table; move it under {table}"
MSG_TABLE = "{path}: {table} must be a table of rules, got {type}"
MSG_NUMBER = "{where}: {key} must be a number{range}, got {value!r}"
MSG_BOOL = "{where}: {key} must be true or false, got {value!r}"
MSG_STRING = "{where}: {key} must be a path (a string), got {value!r}"
MSG_ATTRS = "{where}: attributes must be a list of attribute names, got {value!r}"
MSG_SDR_TABLE = "{where}: min_sdr must be a number in [0, 1] or a table of threshold = number, got {value!r}"
MSG_NO_RULES = ("no gate rules: give flags such as «max_dp» 0.1, or a [gate] table in fairlandmark.toml "
                "([tool.fairlandmark.gate] in pyproject.toml)")
MSG_NEEDS_BASELINE = "{where}: {key} needs a baseline audit JSON (baseline = \"PATH\" or «baseline» PATH)"
MSG_NEEDS_SIGNIFICANCE = ("max_dp_only_significant: audit {path} has no significance fields; "
                          "run the audit with «permutations», or drop the option")
MSG_NEEDS_PRIVACY = ("max_privacy_balanced_accuracy: audit {path} has no privacy block with balanced_accuracy; "
                     "run the attribute-inference check (fairlandmark privacy) into the audit, or drop the rule")
MSG_THRESHOLD = "min_sdr: threshold {thr} is not in audit {path} (its thresholds are {known})"
MSG_ATTRIBUTE = "attributes: {name!r} is not in audit {path}; its attributes are {known}"
MSG_ONLY_SIG_ALONE = "{where}: max_dp_only_significant needs max_dp"
MSG_NO_ATTRIBUTES_SELECTED = ("no check ran: attributes = [] selects no attribute of audit {path}; name the "
                              "attributes to gate, or drop the key to gate them all (counted as a failure)")
MSG_NOTHING_CHECKED = ("no check ran on audit {path} (it has no keypoint or attribute the rules apply to); "
                       "counted as a failure")
UNCHECKABLE = "is missing, so it cannot be checked (counted as a failure) against"

# rule name -> (kind, lower bound, upper bound or None); order = report order
RULES = {
    "max_dp": ("number", 0.0, 1.0),
    "max_mean_dp": ("number", 0.0, 1.0),
    "max_mre": ("number", 0.0, None),
    "min_sdr": ("sdr", 0.0, 1.0),
    "max_privacy_balanced_accuracy": ("number", 0.0, 1.0),
    "max_dp_regression": ("number", 0.0, 1.0),
    "max_mean_dp_regression": ("number", 0.0, 1.0),
    "max_mre_regression": ("number", 0.0, None),
}
OPTIONS = {"max_dp_only_significant": "bool", "baseline": "path", "attributes": "list"}
REGRESSION_RULES = ("max_dp_regression", "max_mean_dp_regression", "max_mre_regression")


@dataclass(frozen=True)
class GateRules:
    """Gate rules; ``None`` = rule off. See the module docstring for each key."""

    max_dp: float | None = None
    max_dp_only_significant: bool = False
    max_mean_dp: float | None = None
    max_mre: float | None = None
    min_sdr: dict[str | None, float] | None = None  # threshold key ("2", "2.5") or None (= primary) -> minimum SDR
    max_privacy_balanced_accuracy: float | None = None
    baseline: str | None = None
    max_dp_regression: float | None = None
    max_mean_dp_regression: float | None = None
    max_mre_regression: float | None = None
    attributes: tuple[str, ...] | None = None
    source: str = field(default="flags", compare=False)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], *, source: str = "flags", table: str = "[gate]",
                     base_dir: str | None = None) -> GateRules:
        """Validate a mapping of rules (a TOML table or keyword arguments)."""
        where = f"{source} {table}" if source != "flags" else "flags"
        known = list(RULES) + list(OPTIONS)
        values: dict[str, Any] = {}
        for key, value in mapping.items():
            if key not in known:
                raise InputError(MSG_UNKNOWN_KEY.format(path=source, key=key, table=table, known=", ".join(known)))
            if value is None:
                continue
            if key == "min_sdr":
                values[key] = _sdr_rule(value, where)
            elif key in RULES:
                _, lo, hi = RULES[key]
                values[key] = _number(value, key, where, lo, hi)
            elif OPTIONS[key] == "bool":
                if not isinstance(value, bool):
                    raise InputError(MSG_BOOL.format(where=where, key=key, value=value))
                values[key] = value
            elif OPTIONS[key] == "path":
                if not isinstance(value, (str, os.PathLike)) or not str(value):
                    raise InputError(MSG_STRING.format(where=where, key=key, value=value))
                path = os.fspath(value)
                values[key] = os.path.join(base_dir, path) if base_dir and not os.path.isabs(path) else path
            else:
                if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                    raise InputError(MSG_ATTRS.format(where=where, value=value))
                values[key] = tuple(value)
        return cls(**values, source=source)

    def merged(self, other: GateRules) -> GateRules:
        """These rules with every rule set in ``other`` taking precedence."""
        changes = {f.name: getattr(other, f.name) for f in fields(other)
                   if f.name != "source" and getattr(other, f.name) is not None
                   and getattr(other, f.name) is not False}  # a limit of 0 is a rule, not "unset"
        source = self.source if not changes else (other.source if self.source == "flags" else
                                                  f"{self.source} + {other.source}")
        return replace(self, **changes, source=source)

    def active(self) -> list[str]:
        """Names of the rules that are on."""
        return [name for name in RULES if getattr(self, name) is not None]

    def check_consistent(self, *, has_baseline: bool = False) -> None:
        where = self.source
        if not self.active():
            raise InputError(MSG_NO_RULES)
        for key in REGRESSION_RULES:
            if getattr(self, key) is not None and not (self.baseline or has_baseline):
                raise InputError(MSG_NEEDS_BASELINE.format(where=where, key=key))
        if self.max_dp_only_significant and self.max_dp is None:
            raise InputError(MSG_ONLY_SIG_ALONE.format(where=where))


def _number(value: object, key: str, where: str, lo: float, hi: float | None) -> float:
    rng = f" in [{lo:g}, {hi:g}]" if hi is not None else f" >= {lo:g}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(MSG_NUMBER.format(where=where, key=key, range=rng, value=value))
    v = float(value)
    if not math.isfinite(v) or v < lo or (hi is not None and v > hi):
        raise InputError(MSG_NUMBER.format(where=where, key=key, range=rng, value=value))
    return v


def _sdr_rule(value: object, where: str) -> dict[str | None, float]:
    if isinstance(value, Mapping):
        out: dict[str | None, float] = {}
        for thr, v in value.items():
            t = num(thr)
            if math.isnan(t) or t <= 0:
                raise InputError(MSG_SDR_TABLE.format(where=where, value=dict(value)))
            out[threshold_key(t)] = _number(v, f"min_sdr[{thr}]", where, 0.0, 1.0)
        if not out:
            raise InputError(MSG_SDR_TABLE.format(where=where, value=dict(value)))
        return out
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(MSG_SDR_TABLE.format(where=where, value=value))
    return {None: _number(value, "min_sdr", where, 0.0, 1.0)}


# -- config files --------------------------------------------------------------------------------------------
def find_config(cwd: str | os.PathLike[str] = ".") -> str | None:
    """The config file used when none is given: ``fairlandmark.toml``, else a
    ``pyproject.toml`` with a ``[tool.fairlandmark]`` table, in ``cwd``; or None."""
    first = os.path.join(cwd, CONFIG_NAMES[0])
    if os.path.isfile(first):
        return first
    py = os.path.join(cwd, CONFIG_NAMES[1])
    if os.path.isfile(py) and tool_table(read_toml(py), py, missing_ok=True) is not None:
        return py
    return None


def tool_table(doc: Mapping[str, Any], path: str, *, missing_ok: bool = False) -> Mapping[str, Any] | None:
    """The ``[tool.fairlandmark]`` table of a parsed pyproject.toml; InputError when a level is not a table.

    Returns ``{}`` when absent (None with ``missing_ok``).
    """
    tool = doc.get("tool")
    if tool is None:
        return None if missing_ok else {}
    if not isinstance(tool, Mapping):
        raise InputError(MSG_TABLE.format(path=path, table="[tool]", type=type(tool).__name__))
    table = tool.get("fairlandmark")
    if table is None:
        return None if missing_ok else {}
    if not isinstance(table, Mapping):
        raise InputError(MSG_TABLE.format(path=path, table="[tool.fairlandmark]", type=type(table).__name__))
    return table


def load_rules(path: str | os.PathLike[str] | None = None, *, cwd: str | os.PathLike[str] = ".") -> GateRules:
    """Gate rules from a TOML file (or the one :func:`find_config` finds).

    Parameters
    ----------
    path : str, optional
        ``fairlandmark.toml`` (rules in ``[gate]``) or ``pyproject.toml``
        (rules in ``[tool.fairlandmark.gate]``).
    cwd : str, default "."
        Where to look when ``path`` is None.

    Returns
    -------
    GateRules
        Empty (no rule on) when there is no config file or no gate table.

    Raises
    ------
    InputError
        Invalid TOML, an unknown key (named with the file), a bad value.
    """
    if path is None:
        path = find_config(cwd)
        if path is None:
            return GateRules(source="flags")
    path = os.fspath(path)
    doc = read_toml(path, missing=MSG_CONFIG_MISSING)
    is_pyproject = os.path.basename(path) == "pyproject.toml"
    if is_pyproject:
        root, prefix = tool_table(doc, path) or {}, "[tool.fairlandmark"
    else:
        root, prefix = doc, "["
    table = f"{prefix}.gate]" if is_pyproject else "[gate]"
    for key in root:
        if key in RULES or key in OPTIONS:
            raise InputError(MSG_OUTSIDE.format(path=path, key=key, table=table))
    gate = root.get("gate")
    if gate is None:
        return GateRules(source=path)
    if not isinstance(gate, Mapping):
        raise InputError(MSG_TABLE.format(path=path, table=table, type=type(gate).__name__))
    return GateRules.from_mapping(gate, source=path, table=table, base_dir=os.path.dirname(os.path.abspath(path)))


# -- checks --------------------------------------------------------------------------------------------------
@dataclass
class Check:
    """One test case: a rule applied to one attribute x keypoint (or attribute, or the audit)."""

    rule: str
    attribute: str | None
    keypoint: object
    value: float
    limit: float
    passed: bool
    message: str
    threshold: str | None = None
    analysis: str | None = None  # privacy: a within-level analysis such as "sex=F"

    @property
    def name(self) -> str:
        parts = []
        if self.attribute is not None:
            parts.append(str(self.attribute))
        if self.analysis is not None:
            parts.append(f"within {self.analysis}")
        if self.keypoint is not None:
            parts.append(f"keypoint {self.keypoint}")
        if self.threshold is not None:
            parts.append(f"threshold {self.threshold}")
        return " / ".join(parts) or "overall"

    def to_dict(self) -> dict[str, Any]:
        v = self.value
        return {"rule": self.rule, "attribute": self.attribute, "keypoint": self.keypoint, "threshold": self.threshold,
                "analysis": self.analysis,
                "value": None if v is None or (isinstance(v, float) and math.isnan(v)) else v, "limit": self.limit,
                "passed": self.passed, "message": self.message}


# A value the audit could not compute (null in the JSON) fails its check: a gate passes only on what it checked.
def _above(value: float, limit: float) -> bool:
    return math.isnan(value) or value > limit + TOLERANCE


def _below(value: float, limit: float) -> bool:
    return math.isnan(value) or value < limit - TOLERANCE


def _rel(value: float, failed: bool, fail_op: str, pass_op: str) -> str:
    return UNCHECKABLE if math.isnan(value) else (fail_op if failed else pass_op)


class GateResult:
    """Outcome of :func:`run_gate`.

    Attributes
    ----------
    checks : list of Check
    rules : GateRules
    doc : dict
        The audit document.
    notes : list of str
    """

    def __init__(self, *, checks: list[Check], rules: GateRules, doc: AuditDocument, notes: Iterable[str]) -> None:
        self.checks, self.rules, self.doc, self.notes = checks, rules, doc, list(notes)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def exit_code(self) -> int:
        return EXIT_PASS if self.passed else EXIT_FAIL

    def _rules_checked(self) -> list[str]:
        """Rule names in report order, then any other check (e.g. the failure of a gate that checked nothing)."""
        return list(RULES) + sorted({c.rule for c in self.checks} - set(RULES))

    def by_rule(self) -> list[dict[str, Any]]:
        """Rows per rule: limit, number of checks, failures, worst value."""
        rows = []
        for rule in self._rules_checked():
            cs = [c for c in self.checks if c.rule == rule]
            if not cs:
                continue
            values = [c.value for c in cs if not math.isnan(c.value)]
            worst = (min(values) if rule == "min_sdr" else max(values)) if values else math.nan
            limits = sorted({c.limit for c in cs})
            rows.append({"rule": rule, "limit": ", ".join(f"{x:g}" for x in limits), "checks": len(cs),
                         "failed": sum(not c.passed for c in cs), "worst": worst})
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "fairlandmark.gate", "passed": self.passed, "n_checks": len(self.checks),
                "n_failed": len(self.failures), "config": self.rules.source, "rules": self.by_rule(),
                "checks": [c.to_dict() for c in self.checks], "notes": self.notes}

    def to_junit(self) -> str:
        """JUnit XML: one testsuite per rule, one testcase per check."""
        root = ET.Element("testsuites", name="fairlandmark gate", tests=str(len(self.checks)),
                          failures=str(len(self.failures)), errors="0", skipped="0", time="0")
        for rule in self._rules_checked():
            cs = [c for c in self.checks if c.rule == rule]
            if not cs:
                continue
            suite = ET.SubElement(root, "testsuite", name=f"fairlandmark.gate.{rule}", tests=str(len(cs)),
                                  failures=str(sum(not c.passed for c in cs)), errors="0", skipped="0", time="0")
            props = ET.SubElement(suite, "properties")
            ET.SubElement(props, "property", name="config", value=str(self.rules.source))
            ET.SubElement(props, "property", name="audit", value=str(self.doc.get("_source", "")))
            for c in cs:
                classname = f"fairlandmark.gate.{rule}" + (f".{c.attribute}" if c.attribute is not None else "")
                case = ET.SubElement(suite, "testcase", classname=classname, name=c.name, time="0")
                if not c.passed:
                    fail = ET.SubElement(case, "failure", type=rule, message=c.message)
                    fail.text = c.message
                else:
                    out = ET.SubElement(case, "system-out")
                    out.text = c.message
        ET.indent(root)
        return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"

    def __repr__(self) -> str:
        return f"GateResult({'passed' if self.passed else 'failed'}: {len(self.failures)}/{len(self.checks)} failed)"


def run_gate(audit: AuditSource,
             rules: GateRules | Mapping[str, Any], *,
             baseline: AuditSource | None = None) -> GateResult:
    """Apply gate rules to an audit.

    Parameters
    ----------
    audit : path, dict or AuditResult
        The audit document (``fairlandmark audit --json``).
    rules : GateRules or dict
        Rules; a dict is validated like a ``[gate]`` table.
    baseline : path, dict or AuditResult, optional
        Baseline audit for the regression rules; default ``rules.baseline``.

    Returns
    -------
    GateResult

    Raises
    ------
    InputError
        Unreadable audit, no rules, or a rule the audit cannot answer
        (significance or privacy missing, unknown threshold or attribute).
    """
    if not isinstance(rules, GateRules):
        rules = GateRules.from_mapping(dict(rules))
    rules.check_consistent(has_baseline=baseline is not None)
    doc = load_audit(audit)
    path = doc.get("_source", "(dict)")
    attrs = list(doc.get("attributes", []))
    if rules.attributes is not None:
        for a in rules.attributes:
            if a not in attrs:
                raise InputError(MSG_ATTRIBUTE.format(name=a, path=path, known=", ".join(map(str, attrs))))
        attrs = list(rules.attributes)
    frame = keypoint_frame(doc)
    ctx = GateContext(doc=doc, path=str(path), rules=rules, attrs=attrs, frame=frame[frame["attribute"].isin(attrs)],
                      baseline_source=baseline if baseline is not None else rules.baseline)
    checks: list[Check] = []
    for rule, check in RULE_CHECKS.items():
        if getattr(rules, rule) is not None:
            checks += check(ctx)
    if not checks:  # a gate that checked nothing must not pass
        why = MSG_NO_ATTRIBUTES_SELECTED if rules.attributes is not None and not attrs else MSG_NOTHING_CHECKED
        checks.append(Check("checks", None, None, math.nan, math.nan, False, why.format(path=path)))
    return GateResult(checks=checks, rules=rules, doc=doc, notes=ctx.notes)


@dataclass
class GateContext:
    """What every rule check reads: the audit, its path, the rules and the attributes they cover."""

    doc: AuditDocument
    path: str
    rules: GateRules
    attrs: list
    frame: pd.DataFrame
    baseline_source: object = None
    notes: list[str] = field(default_factory=list)
    _baseline: AuditDocument | None = None

    @property
    def unit(self) -> str:
        return str(self.doc.get("unit", ""))

    @property
    def overall(self) -> dict:
        return overall_row(self.doc)

    def limit(self, rule: str) -> float:
        """The limit of a rule that is set (checks run only for rules that are)."""
        return float(getattr(self.rules, rule))

    def baseline(self) -> AuditDocument:
        """The baseline audit, loaded once and checked against the audit (unit, primary threshold)."""
        if self._baseline is None:
            base = load_audit(self.baseline_source, what="baseline")
            _check_comparable(self.doc, base, self.rules)
            self._baseline = base
        return self._baseline


def _check_max_dp(ctx: GateContext) -> list[Check]:
    limit, only_sig = ctx.limit("max_dp"), ctx.rules.max_dp_only_significant
    if only_sig and not ctx.frame["p_value"].notna().any():
        raise InputError(MSG_NEEDS_SIGNIFICANCE.format(path=ctx.path))
    checks = []
    for r in ctx.frame.to_dict("records"):
        dp = r["dp"]
        over = _above(dp, limit)
        failed = math.isnan(dp) or (over and (r["significant"] or not only_sig))
        if math.isnan(dp):
            msg = (f"{r['attribute']} keypoint {r['keypoint']}: no DP (fewer than two groups large enough; "
                   f"lower the audit's «min_group_size» or leave the attribute out): counted as a failure")
        else:
            msg = f"{r['attribute']} keypoint {r['keypoint']}: DP {dp:.4f} {'>' if over else '<='} {limit:g}"
            if only_sig:
                msg += (f" (significant, adjusted p {r['p_adjusted']:.3g})" if r["significant"] else
                        f" (not significant, adjusted p {r['p_adjusted']:.3g}: not counted)")
        checks.append(Check("max_dp", r["attribute"], r["keypoint"], dp, limit, not failed, msg))
    return checks


def _check_max_mean_dp(ctx: GateContext) -> list[Check]:
    limit = ctx.limit("max_mean_dp")
    checks = []
    for a in ctx.attrs:
        v = num(summary_row(ctx.doc, a).get("mean_dp"))
        over = _above(v, limit)
        msg = (f"{a}: no mean DP (no keypoint has two groups large enough): counted as a failure"
               if math.isnan(v) else
               f"{a}: mean DP over keypoints {v:.4f} {'>' if over else '<='} {limit:g}")
        checks.append(Check("max_mean_dp", a, None, v, limit, not over, msg))
    return checks


def _check_max_mre(ctx: GateContext) -> list[Check]:
    limit = ctx.limit("max_mre")
    v = num(ctx.overall.get("mre"))
    over = _above(v, limit)
    return [Check("max_mre", None, None, v, limit, not over,
                  f"overall MRE {fmt(v, 4)} {ctx.unit} {_rel(v, over, '>', '<=')} {limit:g}")]


def _check_min_sdr(ctx: GateContext) -> list[Check]:
    doc = ctx.doc
    known = [threshold_key(t) for t in doc.get("thresholds", [])]
    primary = threshold_key(doc.get("primary_threshold", (doc.get("thresholds") or [2.0])[0]))
    checks = []
    for thr, limit in (ctx.rules.min_sdr or {}).items():
        key = primary if thr is None else thr
        if key not in known:
            raise InputError(MSG_THRESHOLD.format(thr=key, path=ctx.path, known=", ".join(known)))
        v = num(ctx.overall.get(f"sdr_{key}"))
        under = _below(v, limit)
        checks.append(Check("min_sdr", None, None, v, limit, not under,
                            f"overall SDR@{key}{ctx.unit} {fmt(v, 4)} {_rel(v, under, '<', '>=')} {limit:g}",
                            threshold=key))
    return checks


def _check_max_privacy(ctx: GateContext) -> list[Check]:
    recs = privacy_records(ctx.doc)
    if not recs:
        raise InputError(MSG_NEEDS_PRIVACY.format(path=ctx.path))
    limit = ctx.limit("max_privacy_balanced_accuracy")
    checks = []
    for rec in recs:
        a = rec.get("attribute")
        if ctx.rules.attributes is not None and a is not None and a not in ctx.attrs:
            continue
        v = num(rec.get("balanced_accuracy"))
        over = _above(v, limit)
        analysis = rec.get("analysis") if rec.get("analysis") not in (None, "all") else None
        where = f"{a or 'attribute'}" + (f" (within {analysis})" if analysis else "")
        checks.append(Check("max_privacy_balanced_accuracy", a, None, v, limit, not over,
                            f"{where} inferred from errors with balanced accuracy {fmt(v, 4)} "
                            f"{_rel(v, over, '>', '<=')} {limit:g} (chance {fmt(rec.get('chance'))})",
                            analysis=analysis))
    return checks


def _check_comparable(doc: AuditDocument, base: AuditDocument, rules: GateRules) -> None:
    if base.get("unit") != doc.get("unit"):
        raise InputError(f"baseline {base.get('_source')}: unit {base.get('unit')!r} differs from the audit's "
                         f"{doc.get('unit')!r}; audit both with the same pixel-to-mm scale")
    primary = [threshold_key(d.get("primary_threshold", (d.get("thresholds") or [2.0])[0])) for d in (base, doc)]
    if primary[0] != primary[1] and (rules.max_dp_regression is not None or rules.max_mean_dp_regression is not None):
        raise InputError(f"baseline {base.get('_source')}: DP is at {primary[0]} {doc.get('unit', '')} there but at "
                         f"{primary[1]} {doc.get('unit', '')} here; audit both with the same first «thresholds_mm»")


def _check_dp_regression(ctx: GateContext) -> list[Check]:
    base = ctx.baseline()
    bdp = {(r["attribute"], str(r["keypoint"])): r["dp"] for r in keypoint_frame(base).to_dict("records")}
    limit, missing = ctx.limit("max_dp_regression"), 0
    checks = []
    for r in ctx.frame.to_dict("records"):
        before = bdp.get((r["attribute"], str(r["keypoint"])))
        if before is None:
            missing += 1
            continue
        delta = r["dp"] - before
        over = _above(delta, limit)
        checks.append(Check("max_dp_regression", r["attribute"], r["keypoint"], delta, limit, not over,
                            f"{r['attribute']} keypoint {r['keypoint']}: DP {fmt(before, 4)} -> {fmt(r['dp'], 4)}"
                            f" (change {delta:+.4f} {'>' if over else '<='} {limit:g})"
                            if not math.isnan(delta) else
                            f"{r['attribute']} keypoint {r['keypoint']}: no DP on one side, so no change can "
                            "be checked: counted as a failure"))
    if missing:
        ctx.notes.append(f"max_dp_regression: {missing} attribute x keypoint row(s) are not in the baseline "
                         "and were not checked")
    return checks


def _check_mean_dp_regression(ctx: GateContext) -> list[Check]:
    base, limit = ctx.baseline(), ctx.limit("max_mean_dp_regression")
    checks = []
    for a in ctx.attrs:
        before = num(summary_row(base, a).get("mean_dp"))
        after = num(summary_row(ctx.doc, a).get("mean_dp"))
        delta = after - before
        over = _above(delta, limit)
        checks.append(Check("max_mean_dp_regression", a, None, delta, limit, not over,
                            f"{a}: mean DP {fmt(before, 4)} -> {fmt(after, 4)} (change "
                            f"{fmt(delta, 4)} {_rel(delta, over, '>', '<=')} {limit:g})"))
    return checks


def _check_mre_regression(ctx: GateContext) -> list[Check]:
    base, limit = ctx.baseline(), ctx.limit("max_mre_regression")
    before, after = num(overall_row(base).get("mre")), num(ctx.overall.get("mre"))
    delta = after - before
    over = _above(delta, limit)
    return [Check("max_mre_regression", None, None, delta, limit, not over,
                  f"overall MRE {fmt(before, 4)} -> {fmt(after, 4)} (change {fmt(delta, 4)} "
                  f"{_rel(delta, over, '>', '<=')} {limit:g})")]


# One check per rule, applied in this order (the order of the JUnit report and the tables).
RULE_CHECKS: dict[str, Callable[[GateContext], list[Check]]] = {
    "max_dp": _check_max_dp,
    "max_mean_dp": _check_max_mean_dp,
    "max_mre": _check_max_mre,
    "min_sdr": _check_min_sdr,
    "max_privacy_balanced_accuracy": _check_max_privacy,
    "max_dp_regression": _check_dp_regression,
    "max_mean_dp_regression": _check_mean_dp_regression,
    "max_mre_regression": _check_mre_regression,
}
