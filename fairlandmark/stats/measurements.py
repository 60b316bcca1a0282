"""Fairness of clinical measurements: error, success and class agreement per group.

For each measurement (see :mod:`fairlandmark.inputs.measurements`) and each
(run, image) row, the measurement is computed from the predicted and from the
true landmarks. Per row:

- the absolute error ``|pred - true|`` (left out of the mean when a landmark
  it uses is missing);
- success: the error is within the measurement's tolerance (a missing value
  is a failure, as a missing landmark is a miss);
- agreement: the class of the predicted value equals the class of the true
  value (a missing value disagrees).

Per group these give the mean absolute error (MAE), the success rate and the
class agreement rate; their parity gaps (largest difference between two
groups) are computed per run and averaged over runs, exactly as a keypoint's
DP. A confusion matrix (true class x predicted class) is counted per group.

Significance reuses the keypoint machinery unchanged: per-row values are fed
to :func:`fairlandmark.stats.significance.run_significance` as extra
"keypoints" whose error is ``error / tolerance`` (threshold 1, so a hit is a
success) or ``0`` / ``2`` for agreement / disagreement (threshold 1, so a hit
is an agreement). With the same seed and groups the label permutations,
bootstrap resamples and randomized attributes are the very ones of the
keypoint tests. Three families are corrected separately over attributes x
measurements, with the audit's correction: success-rate DP, agreement-rate DP
and MAE gap (the threshold-free test, on ``error / tolerance``, which leaves
its p-value unchanged). Keeping them apart from the keypoint family means that
adding measurements never changes a keypoint's adjusted p-value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fairlandmark.exceptions import InputError
from fairlandmark.inputs.groups import GroupCoding
from fairlandmark.inputs.measurements import (Measurement, MeasurementSet, classify, load_measurements,
                                             measurement_values)
from fairlandmark.inputs.study import Study
from fairlandmark.stats.curves import group_validity
from fairlandmark.stats.kernel import RunKernel, aggregate, mean_std_over_runs, parity_gap

__all__ = ["MeasurementAudit", "audit_measurements", "measurement_rows"]

MSG_NO_COORDS = ("--measurements needs landmark coordinates (pred_x, pred_y, true_x, true_y); the predictions have "
                 "only error_mm, so measurements cannot be computed; drop --measurements or give coordinates")


@dataclass
class _Validity:
    """What :func:`run_significance` reads from an observed attribute: which groups are in DP per run."""

    valid: np.ndarray


class MeasurementAudit:
    """Per (attribute, measurement) fairness of clinical measurements.

    Attributes
    ----------
    measurements : MeasurementSet
    names : list of str
        Reported measurements, in order.
    units : list of str
    pred_values, true_values : ndarray, shape (N, M)
        Each measurement per (run, image) row from predicted / true landmarks.
    errors : ndarray, shape (N, M)
        Absolute errors; NaN where the measurement is missing.
    records : list of dict
        One JSON-ready record per (attribute, measurement).
    """

    def __init__(self, measurements: MeasurementSet, names: list[str], units: list[str], pred_values: np.ndarray,
                 true_values: np.ndarray, errors: np.ndarray, records: list[dict[str, Any]],
                 settings: dict[str, Any]) -> None:
        self.measurements = measurements
        self.names = names
        self.units = units
        self.pred_values = pred_values
        self.true_values = true_values
        self.errors = errors
        self.records = records
        self.settings = settings

    def table(self) -> pd.DataFrame:
        """One tidy row per (attribute, measurement, group)."""
        return measurement_rows(self.records)

    def block(self) -> dict[str, Any]:
        """The JSON ``measurement_settings`` block (records go to the ``measurements`` list)."""
        return dict(self.settings)


def measurement_rows(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Tidy rows (attribute, measurement, group, n, mae, success, agreement) from measurement records."""
    rows = []
    for rec in records:
        for g in rec.get("n_by_group") or {}:
            rows.append({"attribute": rec["attribute"], "measurement": rec["measurement"], "group": g,
                         "n_images": (rec.get("n_by_group") or {}).get(g),
                         "n_missing": (rec.get("n_missing_by_group") or {}).get(g),
                         "mae": (rec.get("mae_by_group") or {}).get(g),
                         "success": (rec.get("success_by_group") or {}).get(g),
                         "agreement": (rec.get("agreement_by_group") or {}).get(g),
                         "dp": rec.get("dp"), "p_value": rec.get("p_value"), "p_adjusted": rec.get("p_adjusted"),
                         "significant": rec.get("significant")})
    return pd.DataFrame(rows)


def _per_group(gsums: np.ndarray, gcounts: np.ndarray, m: int) -> tuple[np.ndarray, ...]:
    present, err, succ, agree = (gsums[..., i * m:(i + 1) * m] for i in range(4))
    with np.errstate(invalid="ignore", divide="ignore"):
        mae = err / present
        success = succ / gcounts[..., None]
        agreement = agree / gcounts[..., None]
    return present, mae, success, agreement


def _dict(groups: Sequence[str], values: Sequence[Any]) -> dict[str, Any]:
    return {g: (None if v is None or (isinstance(v, float) and np.isnan(v)) else v) for g, v in zip(groups, values)}


def audit_measurements(study: Study, measurements: Any, *, min_group_size: int = 10,
                       significance: Any = None) -> MeasurementAudit:
    """Audit clinical measurements per group: MAE, success and agreement rates, their gaps and tests.

    Parameters
    ----------
    study : Study
        A prepared study with coordinates (``pred_xy``, ``true_xy``), see
        :func:`fairlandmark.audit.prepare_study`.
    measurements : MeasurementSet, preset name, TOML path or list of definitions
    min_group_size : int, default 10
        Groups with fewer images in a run are left out of the gaps there.
    significance : SignificanceOptions, dict or True, optional
        Permutations, bootstrap and randomized baseline, as for keypoints (and
        with the same seed, the same resamples).

    Returns
    -------
    MeasurementAudit

    Raises
    ------
    InputError
        The study has no coordinates (``error_mm`` input), or a measurement
        uses a keypoint the study does not have.
    """
    mset: MeasurementSet = load_measurements(measurements)
    if study.pred_xy is None or study.true_xy is None:
        raise InputError(MSG_NO_COORDS)
    chosen = mset.reported
    names = [m.name for m in chosen]
    units = [m.unit_for(study.unit, mset.by_name) for m in chosen]
    pv = measurement_values(study.pred_xy, list(study.keypoints), mset)
    tv = measurement_values(study.true_xy, list(study.keypoints), mset)
    m = len(chosen)
    err = np.abs(pv - tv)
    present = ~np.isnan(err)
    tol = np.array([c.tolerance if c.tolerance is not None else np.nan for c in chosen])
    has_tol = ~np.isnan(tol)
    has_cls = np.array([c.has_classes for c in chosen])
    success = present & (err <= np.where(has_tol, tol, -np.inf))
    pred_cls = np.column_stack([classify(pv[:, j], c) for j, c in enumerate(chosen)]) if m else np.empty((len(pv), 0))
    true_cls = np.column_stack([classify(tv[:, j], c) for j, c in enumerate(chosen)]) if m else np.empty((len(pv), 0))
    agree = (pred_cls >= 0) & (pred_cls == true_cls) & has_cls

    values = np.concatenate([present, np.where(present, err, 0.0), success, agree], axis=1).astype(float)
    kernel = RunKernel(values, study.row_run, study.n_runs)
    coding = study.coding

    sig = {}
    if significance is not None:
        sig = _significance(study, coding, err, tol, has_tol, has_cls, agree, pred_cls, true_cls, names,
                            min_group_size, significance)

    sums, counts = kernel.sums(kernel.labels_by_run(coding.cell), coding.n_cells)  # one pass over the rows
    cell_sums, cell_counts = sums[0], counts[0]
    records = []
    for a in coding.attributes:
        groups = list(coding.groups[a])
        gsums, gcounts = aggregate(cell_sums, cell_counts, coding.aggregation(a))  # (R, G, 4M), (R, G)
        n_present, mae, succ, agr = _per_group(gsums, gcounts, m)
        valid = gcounts >= min_group_size
        succ_dp, _, _ = parity_gap(succ, valid)
        agr_dp, _, _ = parity_gap(agr, valid)
        mae_gap, _, _ = parity_gap(mae, valid)
        codes = coding.row_codes(a)
        for j, c in enumerate(chosen):
            rec = _record(a, groups, c, units[j], j, gcounts, n_present, mae, succ, agr, valid, succ_dp, agr_dp,
                          mae_gap, codes, pred_cls[:, j], true_cls[:, j], present[:, j])
            if sig:
                rec.update(_sig_fields(sig, a, j, c, groups, rec))
            records.append(rec)
    settings = {"name": mset.name, "source": mset.source, "citation": mset.citation or None,
                "definitions": [_definition(c) for c in mset.measurements],
                "families": "success DP, agreement DP and MAE gap, each corrected over attributes x measurements"}
    if sig:
        settings["correction"] = sig["options"].correction
        settings["alpha"] = sig["options"].alpha
    return MeasurementAudit(mset, names, units, pv, tv, err, records, settings)


def _definition(c: Measurement) -> dict[str, Any]:
    d = {"name": c.name, "kind": c.kind, "report": c.report, "description": c.description or None}
    if c.points:
        d["points"] = list(c.points)
    if c.of:
        d["of"] = list(c.of)
    if c.weights:
        d["weights"] = list(c.weights)
    if c.signed:
        d["signed"] = c.signed
    if c.tolerance is not None:
        d["tolerance"] = c.tolerance
    if c.cuts:
        d["cuts"] = list(c.cuts)
        d["classes"] = list(c.classes)
    return d


def _record(a: str, groups: list[str], c: Measurement, unit: str, j: int, gcounts: np.ndarray, n_present: np.ndarray,
            mae: np.ndarray, succ: np.ndarray, agr: np.ndarray, valid: np.ndarray, succ_dp: np.ndarray,
            agr_dp: np.ndarray, mae_gap: np.ndarray, codes: np.ndarray, pred_cls: np.ndarray, true_cls: np.ndarray,
            present: np.ndarray) -> dict[str, Any]:
    mae_m, mae_s = mean_std_over_runs(mae[..., j])
    succ_m, succ_s = mean_std_over_runs(succ[..., j])
    agr_m, agr_s = mean_std_over_runs(agr[..., j])
    n_by_group = gcounts.sum(axis=0).astype(int)
    n_missing = (gcounts - n_present[..., j]).sum(axis=0).astype(int)
    rec = {
        "attribute": a, "measurement": c.name, "kind": c.kind, "unit": unit, "description": c.description or None,
        "tolerance": c.tolerance, "classes": list(c.classes) if c.has_classes else None,
        "n_by_group": _dict(groups, n_by_group.tolist()),
        "n_missing_by_group": _dict(groups, n_missing.tolist()),
        "mae_by_group": _dict(groups, mae_m.tolist()), "mae_std_by_group": _dict(groups, mae_s.tolist()),
    }
    gap_m, gap_s = mean_std_over_runs(mae_gap[:, j])
    rec.update({"mae_gap": float(gap_m), "mae_gap_std": float(gap_s)})
    if c.tolerance is not None:
        dp_m, dp_s = mean_std_over_runs(succ_dp[:, j])
        rec.update({"success_by_group": _dict(groups, succ_m.tolist()),
                    "success_std_by_group": _dict(groups, succ_s.tolist()),
                    "success_dp": float(dp_m), "success_dp_std": float(dp_s)})
    else:
        rec.update({"success_by_group": None, "success_std_by_group": None, "success_dp": None,
                    "success_dp_std": None})
    if c.has_classes:
        dp_m, dp_s = mean_std_over_runs(agr_dp[:, j])
        n_cls = len(c.classes)
        ok = present & (pred_cls >= 0) & (true_cls >= 0)
        flat = (codes[ok] * n_cls + true_cls[ok]) * n_cls + pred_cls[ok]
        conf = np.bincount(flat, minlength=len(groups) * n_cls * n_cls).reshape(len(groups), n_cls, n_cls)
        rec.update({"agreement_by_group": _dict(groups, agr_m.tolist()),
                    "agreement_std_by_group": _dict(groups, agr_s.tolist()),
                    "agreement_dp": float(dp_m), "agreement_dp_std": float(dp_s),
                    "confusion_by_group": {g: conf[i].tolist() for i, g in enumerate(groups)}})
    else:
        rec.update({"agreement_by_group": None, "agreement_std_by_group": None, "agreement_dp": None,
                    "agreement_dp_std": None, "confusion_by_group": None})
    # The headline gap: success rate when there is a tolerance, else class agreement.
    dp_of = "success" if c.tolerance is not None else ("agreement" if c.has_classes else None)
    by_run = succ[..., j] if dp_of == "success" else agr[..., j]
    rec["dp_of"] = dp_of
    rec["dp"] = rec.get(f"{dp_of}_dp") if dp_of else None
    rec["dp_std"] = rec.get(f"{dp_of}_dp_std") if dp_of else None
    rec["pair"] = None
    if dp_of:
        in_dp = np.where(valid, by_run, np.nan)
        mean_in_dp, _ = mean_std_over_runs(in_dp)
        gap, high, low = parity_gap(mean_in_dp[:, None], np.asarray(valid.any(axis=0)))
        if not np.isnan(gap[0]):
            rec["pair"] = [groups[int(high[0])], groups[int(low[0])]]
    return rec


# -- significance ------------------------------------------------------------------------------------------------
def _significance(study: Study, coding: GroupCoding, err: np.ndarray, tol: np.ndarray, has_tol: np.ndarray,
                  has_cls: np.ndarray, agree: np.ndarray, pred_cls: np.ndarray, true_cls: np.ndarray, names: list[str],
                  min_group_size: int, options: Any) -> dict[str, Any]:
    from fairlandmark.stats.significance import SignificanceOptions, SignificanceResult, run_significance

    options = SignificanceOptions.coerce(options)
    quiet = dataclasses.replace(options, progress=False)
    # Group validity per run, as for the keypoints (it depends on group sizes only).
    observed = {a: _Validity(valid=v) for a, v in group_validity(study, min_group_size).items()}

    def run(errors: np.ndarray, columns: list[int], opts: SignificanceOptions) -> SignificanceResult:
        pseudo = Study(errors=errors[:, columns], unit="", runs=np.asarray(study.runs),
                       keypoints=np.asarray([names[j] for j in columns], dtype=object), row_run=study.row_run,
                       row_image=study.row_image, coding=coding, families={})
        return run_significance(pseudo, thresholds=[1.0], min_group_size=min_group_size, observed=observed,
                                options=opts)

    out = {"options": options}
    scale = np.where(has_tol, tol, 1.0)
    success_cols = np.flatnonzero(has_tol).tolist()
    if success_cols:
        out["success"] = (run(err / scale, success_cols, quiet), success_cols, scale)
    class_cols = np.flatnonzero(has_cls).tolist()
    if class_cols:
        # 0 = agreement, 2 = disagreement, NaN = no predicted class; a hit at threshold 1 is an agreement.
        coded = np.where(agree, 0.0, 2.0)
        coded[(pred_cls < 0) | (true_cls < 0)] = np.nan
        out["agreement"] = (run(coded, class_cols, quiet), class_cols, None)
    all_cols = list(range(len(names)))
    if all_cols and options.permutations:
        gap_opts = dataclasses.replace(quiet, baseline_repeats=0)
        out["mae"] = (run(err / scale, all_cols, gap_opts), all_cols, scale)
    return out


def _pick(columns: Mapping[str, Mapping[str, Any]], name: str, a: str, i: int) -> Any:
    col = columns.get(a, {}).get(name)
    if col is None:
        return None
    value = col[i]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    value = float(value)
    return None if np.isnan(value) else value


def _sig_fields(sig: Mapping[str, Any], a: str, j: int, c: Measurement, groups: list[str],
               rec: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for kind in ("success", "agreement"):
        if kind not in sig or j not in sig[kind][1]:
            continue
        res, cols, _ = sig[kind]
        i = cols.index(j)
        test = {name: _pick(res.columns, name, a, i)
                for name in ("p_value", "p_adjusted", "p_bh", "p_holm", "p_westfall_young", "baseline_mean",
                             "baseline_std")}
        test["significant"] = bool(_pick(res.columns, "significant", a, i) or False)
        lo, hi = _pick(res.columns, "dp_ci_low", a, i), _pick(res.columns, "dp_ci_high", a, i)
        test["dp_ci"] = [lo, hi] if lo is not None or hi is not None else None
        if a in res.group_ci:
            s_lo, s_hi = res.group_ci[a][0][:, i], res.group_ci[a][1][:, i]
            test["ci_by_group"] = {g: [float(x), float(y)] for g, x, y in zip(groups, s_lo, s_hi)}
        fields[f"{kind}_test"] = test
    if "mae" in sig:
        res, cols, scale = sig["mae"]
        i = cols.index(j)
        test = {"p_value": _pick(res.columns, "mre_gap_p", a, i),
                "p_adjusted": _pick(res.columns, "mre_gap_p_adjusted", a, i),
                "significant": bool(_pick(res.columns, "mre_gap_significant", a, i) or False)}
        if a in res.group_ci:  # MAE intervals, back from tolerance units
            m_lo, m_hi = res.group_ci[a][2][:, i] * scale[j], res.group_ci[a][3][:, i] * scale[j]
            test["ci_by_group"] = {g: [float(x), float(y)] for g, x, y in zip(groups, m_lo, m_hi)}
        fields["mae_gap_test"] = test
    primary = rec.get("dp_of")
    head = fields.get(f"{primary}_test") if primary else None
    fields["p_value"] = head.get("p_value") if head else None
    fields["p_adjusted"] = head.get("p_adjusted") if head else None
    fields["significant"] = bool(head.get("significant")) if head else False
    fields["dp_ci"] = head.get("dp_ci") if head else None
    fields["baseline_mean"] = head.get("baseline_mean") if head else None
    fields["baseline_std"] = head.get("baseline_std") if head else None
    return fields
