"""Covariate-adjusted disparities: is the gap the group's, or something that travels with it?

For each (attribute, keypoint) two regressions are fitted on the (run, image)
rows of the groups that take part in the raw DP (as in the audit, a group too
small in a run is left out of that run):

* **error** (the study's unit, mm when a scale is given) on the attribute, the
  covariates and the run (when there are several runs): a linear model, missing
  predictions left out (as for MRE);
* **hit** at the primary threshold (missing = miss, as for SDR): a logistic
  model.

Images are clusters: the rows of one image (one per run) are correlated, so
both models are GEE with ``groups = image`` and the cluster-robust (sandwich)
covariance with the Mancl-DeRouen small-sample correction. Under the default
working independence the estimates are those of least squares and logistic
regression, fitted for all keypoints of an attribute at once (vectorised, equal
to :class:`statsmodels.genmod.generalized_estimating_equations.GEE` to 1e-6 in
the tests); ``working_correlation="exchangeable"`` fits statsmodels' GEE one
model at a time.

What is reported, per (attribute, keypoint):

* the *contrast of the raw DP pair*: the two groups with the highest and the
  lowest SDR (``pair`` of the audit). ``effect_mm`` = adjusted mean error of the
  low-SDR group minus that of the high-SDR group (positive: the group that hits
  less also errs more); ``sdr_gap`` = adjusted SDR of the high group minus the
  low group (the adjusted counterpart of DP, by marginal standardisation: every
  row's predicted hit probability with its group set to each of the two, averaged;
  delta-method interval); ``odds_ratio`` = odds of a hit, high vs low.
* the *p-value of the attribute*: a joint Wald test (chi-square, one degree of
  freedom per non-reference group) that all group coefficients are zero, on the
  robust covariance. With two groups this is the test of the pair; with more it
  does not depend on which pair the data made largest, so it keeps its level
  where a test of the selected pair would not.

Multiple testing: the audit's correction over all adjusted tests (attributes x
keypoints), separately for the error and the hit models; Westfall-Young needs
permutations the models do not have and falls back to Holm, which also controls
the family-wise error rate.

statsmodels is imported only for an exchangeable working correlation, so an
audit does not load it by default.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import special

from fairlandmark.exceptions import InputError
from fairlandmark.inputs.schema import ID_COLUMN, read_table
from fairlandmark.stats.significance import benjamini_hochberg, holm

__all__ = [
    "Covariates",
    "check_covariates",
    "AdjustedResult",
    "adjusted_disparities",
    "association",
    "COLLINEARITY_WARN",
]

#: Association (correlation ratio or Cramer's V, 0..1) between attribute and covariate above which we warn.
COLLINEARITY_WARN = 0.8
#: A group's logistic coefficient this large (log-odds) means the fit ran off towards a separated solution.
_SEPARATION_LOGIT = 15.0
#: Sandwich covariance with the Mancl-DeRouen small-sample correction (statsmodels GEE "bias_reduced").
COV_TYPE = "bias_reduced"
#: Suffix that forces a numeric-looking covariate (e.g. a site coded 1, 2, 3) to be categorical.
CATEGORICAL_SUFFIX = ":cat"

MSG_NO_COVARIATE = "adjust: give at least one metadata column to adjust for, e.g. --adjust site"
MSG_COV_MISSING = "{src}: no column '{col}' to adjust for (--adjust {col}); the columns found are: {found}"
MSG_COV_IS_ATTRIBUTE = ("--adjust {col}: '{col}' is an audited attribute; adjusting an attribute for itself "
                        "removes the gap by construction: drop --adjust {col}")
MSG_COV_TWICE = "--adjust {col}: given twice; give each covariate once"
MSG_COV_BLANK = ("{src}: image '{image}', column '{col}' is empty; every audited image needs a value for a "
                 "covariate (--adjust {col}): fill it or drop the option")
MSG_COV_SINGLE = ("{src}: covariate '{col}' has a single value ({value!r}) among the audited images; "
                  "there is nothing to adjust for: drop --adjust {col}")
MSG_COV_NOT_NUMBER = ("{src}: image '{image}', column '{col}': {value!r} is not finite; "
                      "fix the value or make the covariate categorical with --adjust {col}:cat")
MSG_COLLINEAR = ("adjust: attribute '{attribute}' and covariate '{col}' are strongly associated "
                 "({measure} = {value:.2f}); their effects are hard to separate and the adjusted intervals are wide")
MSG_CONFOUNDED = ("adjust: attribute '{attribute}' is fully determined by the covariates {cols} at keypoint "
                  "{keypoint}; the adjusted gap cannot be estimated (NaN)")
MSG_SEPARATION = ("adjust: attribute '{attribute}', keypoint {keypoint}: {what} has only hits or only misses "
                  "(perfect separation); the adjusted SDR gap is not estimable (NaN)")
MSG_NO_CONVERGE = ("adjust: attribute '{attribute}', keypoint {keypoint}: the {model} model did not converge "
                   "({detail}); its adjusted result is NaN")
MSG_OPTION = "adjust: {name} {rule}, got {value!r}"
MSG_TOO_FEW = ("adjust: attribute '{attribute}', keypoint {keypoint}: the predictions present do not cover every "
               "group and covariate level, so the error model cannot be fitted (NaN); the hit model counts "
               "missing predictions as misses and is still reported")


# -- covariates ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Covariates:
    """Validated covariates, one row per image.

    Attributes
    ----------
    frame : pandas.DataFrame
        Indexed by image id; numeric covariates as float, categorical ones as str.
    numeric : tuple of str
        Names of the numeric covariates (the rest are categorical).
    """

    frame: pd.DataFrame
    numeric: tuple

    @property
    def names(self) -> list:
        return list(self.frame.columns)


def _parse_name(spec: str) -> tuple[str, bool]:
    spec = str(spec).strip()
    if spec.endswith(CATEGORICAL_SUFFIX):
        return spec[: -len(CATEGORICAL_SUFFIX)].strip(), True
    return spec, False


def check_covariates(metadata: Any, columns: Sequence[str], *, image_ids: Sequence[str] | np.ndarray,
                     attributes: Sequence[str] = (), source: str | None = None) -> Covariates:
    """Validate the covariates to adjust for and align them to the audited images.

    Parameters
    ----------
    metadata : pandas.DataFrame or path
        ``image_id`` plus the covariate columns (the audit's metadata file).
    columns : sequence of str
        Covariate names. A column whose values all parse as numbers is numeric
        (entered linearly, standardised); others are categorical (one indicator
        per level but the first). ``"site:cat"`` forces ``site`` categorical.
    image_ids : sequence of str
        Images of the audit; each needs a value.
    attributes : sequence of str
        Audited attributes, which cannot be covariates.
    source : str, optional
        File name for messages.

    Returns
    -------
    Covariates

    Examples
    --------
    >>> meta = pd.DataFrame({"image_id": ["a", "b", "c"], "site": ["x", "y", "x"], "age": [3, 5, 9]})
    >>> cov = check_covariates(meta, ["site", "age"], image_ids=["a", "b", "c"])
    >>> cov.numeric
    ('age',)
    """
    src = source or (os.fspath(metadata) if isinstance(metadata, (str, os.PathLike)) else "metadata")
    specs = [_parse_name(c) for c in (columns or [])]
    if not specs:
        raise InputError(MSG_NO_COVARIATE)
    frame = metadata if isinstance(metadata, pd.DataFrame) else read_table(metadata, kind="metadata",
                                                                           string_columns=(ID_COLUMN,))
    frame = frame.rename(columns=lambda c: str(c).strip())
    seen = set()
    for name, _ in specs:
        if name in seen:
            raise InputError(MSG_COV_TWICE.format(col=name))
        seen.add(name)
        if name in attributes:
            raise InputError(MSG_COV_IS_ATTRIBUTE.format(col=name))
        if name not in frame.columns or name == ID_COLUMN:
            found = ", ".join(str(c) for c in frame.columns if c != ID_COLUMN)
            raise InputError(MSG_COV_MISSING.format(src=src, col=name, found=found))
    ids = frame[ID_COLUMN].astype(str).str.strip().to_numpy()
    wanted = pd.unique(np.asarray(image_ids, dtype=object).astype(str))
    table = pd.DataFrame({name: frame[name].to_numpy() for name, _ in specs}, index=pd.Index(ids, name=ID_COLUMN))
    table = table[~table.index.duplicated()].reindex(wanted)  # check_metadata already refused duplicates
    out, numeric = {}, []
    for name, force_cat in specs:
        raw = table[name]
        text = raw.astype(str).str.strip()
        blank = raw.isna().to_numpy() | text.eq("").to_numpy()
        if blank.any():
            raise InputError(MSG_COV_BLANK.format(src=src, image=table.index[int(np.flatnonzero(blank)[0])], col=name))
        as_number = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
        if not force_cat and not np.isnan(as_number).any():
            if not np.isfinite(as_number).all():
                i = int(np.flatnonzero(~np.isfinite(as_number))[0])
                raise InputError(MSG_COV_NOT_NUMBER.format(src=src, image=table.index[i], col=name, value=raw.iloc[i]))
            values: Any = as_number
            numeric.append(name)
        else:
            values = text.to_numpy(dtype=object)
        if len(pd.unique(values)) < 2:
            raise InputError(MSG_COV_SINGLE.format(src=src, col=name, value=values[0]))
        out[name] = values
    return Covariates(frame=pd.DataFrame(out, index=table.index), numeric=tuple(numeric))


def association(codes: np.ndarray, covariate: np.ndarray, numeric: bool) -> tuple[str, float]:
    """Strength of the association between a group code and a covariate, in 0..1.

    Numeric covariate: the correlation ratio eta (square root of the share of its
    variance explained by the groups). Categorical: Cramer's V.

    Examples
    --------
    >>> association(np.array([0, 0, 1, 1]), np.array([1.0, 1.0, 5.0, 5.0]), True)
    ('eta', 1.0)
    >>> association(np.array([0, 1, 0, 1]), np.array(["a", "a", "b", "b"], dtype=object), False)[1]
    0.0
    """
    codes = np.asarray(codes)
    if numeric:
        x = np.asarray(covariate, dtype=float)
        total = np.sum((x - x.mean()) ** 2)
        if total == 0:
            return "eta", 0.0
        sizes = np.bincount(codes)
        means = np.bincount(codes, weights=x) / np.maximum(sizes, 1)
        between = np.sum(sizes * (means - x.mean()) ** 2)
        return "eta", float(np.sqrt(min(between / total, 1.0)))
    _, levels = np.unique(np.asarray(covariate, dtype=str), return_inverse=True)
    table = np.zeros((codes.max() + 1, levels.max() + 1))
    np.add.at(table, (codes, levels), 1.0)
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
    n, k = table.sum(), min(table.shape) - 1
    if k == 0:
        return "Cramer's V", 0.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / n
    chi2 = np.sum((table - expected) ** 2 / expected)
    return "Cramer's V", float(np.sqrt(min(chi2 / (n * k), 1.0)))


# -- design ------------------------------------------------------------------------------------

def _dummies(values: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, list]:
    """Indicators of every level present in ``rows`` but the first (the reference)."""
    levels, inverse = np.unique(np.asarray(values)[rows].astype(str), return_inverse=True)
    if len(levels) < 2:
        return np.zeros((len(rows), 0)), []
    return (inverse[:, None] == np.arange(1, len(levels))[None, :]).astype(float), list(levels[1:])


@dataclass
class _Design:
    """Design matrix of one attribute: intercept | group indicators | runs | covariates."""

    X: np.ndarray
    group_cols: dict  # group index -> column of X (the reference group has none)
    reference: int
    names: list


def _design(codes: np.ndarray, groups_in: np.ndarray, row_run: np.ndarray, n_runs: int,
            cov_rows: pd.DataFrame, numeric: tuple) -> _Design:
    n = len(codes)
    reference = int(groups_in[0])
    blocks = [np.ones((n, 1))]
    names = ["intercept"]
    group_cols = {}
    for g in groups_in[1:]:
        group_cols[int(g)] = len(names)
        blocks.append((codes == g).astype(float)[:, None])
        names.append(f"group[{int(g)}]")
    if n_runs > 1:
        ind, levels = _dummies(row_run, np.arange(n))
        blocks.append(ind)
        names += [f"run[{lv}]" for lv in levels]
    for name in cov_rows.columns:
        values = cov_rows[name].to_numpy()
        if name in numeric:
            x = values.astype(float)
            sd = x.std()
            blocks.append(((x - x.mean()) / (sd if sd > 0 else 1.0))[:, None])
            names.append(name)
        else:
            ind, levels = _dummies(values, np.arange(n))
            blocks.append(ind)
            names += [f"{name}[{lv}]" for lv in levels]
    return _Design(X=np.concatenate(blocks, axis=1), group_cols=group_cols, reference=reference, names=names)


# -- fitting ---------------------------------------------------------------------------------------

@dataclass
class _Fit:
    params: np.ndarray
    cov: np.ndarray
    fitted: Any


def _fit_gee(y: np.ndarray, X: np.ndarray, clusters: np.ndarray, family: Any, correlation: str,
             sm: Any) -> tuple[_Fit | None, str | None]:
    """One GEE fit; returns (_Fit or None, problem text or None). Never raises on numerical trouble."""
    structure = sm.cov_struct.Exchangeable() if correlation == "exchangeable" else sm.cov_struct.Independence()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        try:
            model = sm.GEE(y, X, groups=clusters, family=family, cov_struct=structure)
            result = model.fit(maxiter=100, cov_type=COV_TYPE)
        except (np.linalg.LinAlgError, ValueError, ZeroDivisionError, FloatingPointError) as exc:
            return None, f"{type(exc).__name__}: {exc}"
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    problems = [str(w.message).splitlines()[0] for w in record
                if issubclass(w.category, ConvergenceWarning) or "converge" in str(w.message).lower()]
    params = np.asarray(result.params, dtype=float)
    cov = np.asarray(result.cov_params(), dtype=float)
    if problems:
        return None, problems[0]
    if not (np.isfinite(params).all() and np.isfinite(cov).all()):
        return None, "non-finite estimates"
    return _Fit(params=params, cov=cov, fitted=result), None


def cluster_index(clusters: np.ndarray) -> np.ndarray:
    """Rows of each cluster as a (C, s) array padded with -1, s the largest cluster size.

    Examples
    --------
    >>> cluster_index(np.array([0, 1, 0, 2]))
    array([[ 0,  2],
           [ 1, -1],
           [ 3, -1]])
    """
    order = np.argsort(clusters, kind="stable")
    ids, starts, sizes = np.unique(clusters[order], return_index=True, return_counts=True)
    out = np.full((len(ids), int(sizes.max()) if len(ids) else 0), -1, dtype=np.int64)
    position = np.arange(len(order)) - np.repeat(starts, sizes)
    out[np.repeat(np.arange(len(ids)), sizes), position] = order
    return out


def _sandwich(X: np.ndarray, weight: np.ndarray, bread: np.ndarray, resid: np.ndarray,
              index: np.ndarray) -> np.ndarray:
    """Mancl-DeRouen sandwich with images as clusters, every keypoint at once.

    ``bread`` (K, p, p) is the inverse of X' W X, ``weight`` (N, K) the working weight (0 for rows out of a
    keypoint's model), ``resid`` (N, K) the response residuals, ``index`` the rows of each cluster
    (:func:`cluster_index`). Each cluster's residuals are corrected to (I - H_c)^-1 r_c with
    H_c = W_c X_c (X' W X)^-1 X_c', which is statsmodels' GEE ``cov_type="bias_reduced"`` under working
    independence (checked in the tests).
    """
    pad = index < 0
    rows = np.where(pad, 0, index)
    Xc = np.where(pad[..., None], 0.0, X[rows])  # (C, s, p); padding rows are zero
    wc = np.where(pad[..., None], 0.0, weight[rows])  # (C, s, K)
    rc = np.where(pad[..., None], 0.0, resid[rows])  # (C, s, K)
    if index.shape[1] == 1:  # one row per cluster: H_c is the scalar leverage
        leverage = wc[:, 0, :] * np.einsum("ci,kij,cj->ck", Xc[:, 0], bread, Xc[:, 0])
        with np.errstate(divide="ignore", invalid="ignore"):
            inflated = np.where(wc[:, 0, :] > 0, rc[:, 0, :] / (1.0 - leverage), 0.0)
        meat = np.einsum("ck,ci,cj->kij", inflated ** 2, Xc[:, 0], Xc[:, 0])
        return bread @ meat @ bread
    hat = np.einsum("csk,csi,kij,ctj->kcst", wc, Xc, bread, Xc)  # (K, C, s, s)
    eye = np.eye(index.shape[1])
    corrected = np.linalg.solve(eye - hat, np.moveaxis(rc, 2, 0)[..., None])[..., 0]  # (K, C, s)
    score = np.einsum("csi,kcs->kci", Xc, corrected)
    return bread @ np.einsum("kci,kcj->kij", score, score) @ bread


def _fit_independence(X: np.ndarray, y: np.ndarray, use: np.ndarray, index: np.ndarray, logistic: bool,
                      max_iter: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GEE fits with working independence of every keypoint at once.

    Under working independence the GEE estimates are the GLM's (least squares, logistic regression); the
    clusters enter only through the sandwich.

    Parameters
    ----------
    X : (N, p) design; y : (N, K) responses; use : (N, K) bool, rows in each keypoint's model;
    index : rows of each image (:func:`cluster_index`).

    Returns
    -------
    params (K, p), cov (K, p, p) (bias-reduced sandwich), ok (K,) bool: converged and finite.
    The logistic fit stops when no fitted probability moves by 1e-10 (at most ``max_iter`` Newton steps).
    """
    n_kp, p = y.shape[1], X.shape[1]
    m = use.astype(float)
    y = np.where(use, y, 0.0)
    beta = np.zeros((n_kp, p))
    ok = np.ones(n_kp, dtype=bool)
    # A keypoint whose rows leave the design singular is marked not ok; pinv keeps the others going.
    full_rank = np.linalg.matrix_rank(np.einsum("nk,ni,nj->kij", m, X, X)) == p
    if not logistic:  # least squares: one batched pseudo-inverse for all keypoints
        bread = np.linalg.pinv(np.einsum("nk,ni,nj->kij", m, X, X))
        beta = (bread @ np.einsum("nk,ni->ki", m * y, X)[..., None])[..., 0]
        resid = (y - X @ beta.T) * m
        return beta, _sandwich(X, m, bread, resid, index), full_rank & np.isfinite(beta).all(axis=1)
    converged = np.zeros(n_kp, dtype=bool)
    mu = np.full(y.shape, np.inf)  # nothing has converged before the first step
    for _ in range(max_iter):  # Newton-Raphson (IRLS) on all keypoints together
        previous = mu
        mu = 1.0 / (1.0 + np.exp(-(X @ beta.T)))
        # Converged when the fitted probabilities stop moving: a covariate level with only hits sends its own
        # coefficient off to infinity, geometrically slower each step, while everything else has settled.
        with np.errstate(invalid="ignore"):
            converged |= np.where(m > 0, np.abs(mu - previous), 0.0).max(axis=0) < 1e-10
        weight = mu * (1.0 - mu) * m
        info = np.einsum("nk,ni,nj->kij", weight, X, X)
        score = np.einsum("nk,ni->ki", (y - mu) * m, X)
        with np.errstate(all="ignore"):
            step = (np.linalg.pinv(info) @ score[..., None])[..., 0]
        beta = beta + np.where(converged[:, None], 0.0, step)
        if converged.all():
            break
    mu = 1.0 / (1.0 + np.exp(-(X @ beta.T)))
    weight = mu * (1.0 - mu) * m
    with np.errstate(all="ignore"):
        bread = np.linalg.pinv(np.einsum("nk,ni,nj->kij", weight, X, X))
    cov = _sandwich(X, weight, bread, (y - mu) * m, index)
    ok &= full_rank & converged & np.isfinite(beta).all(axis=1) & np.isfinite(cov).all(axis=(1, 2))
    return beta, cov, ok


def _fast_fit(fits: tuple, k: int) -> tuple:
    params, cov, ok = fits
    if not ok[k]:
        return None, "fitted probabilities still moving after 50 Newton steps"
    return _Fit(params=params[k], cov=cov[k], fitted=None), None


def _sm() -> Any:
    """statsmodels, imported on first use: only audits with several rows per image need it."""
    import statsmodels.api as sm

    return sm


def _wald(params: np.ndarray, cov: np.ndarray, cols: Sequence[int]) -> float:
    """Joint Wald chi-square p-value that the coefficients ``cols`` are all zero."""
    cols = list(cols)
    if not cols:
        return np.nan
    b = params[cols]
    V = cov[np.ix_(cols, cols)]
    try:
        stat = float(b @ np.linalg.solve(V, b))
    except np.linalg.LinAlgError:
        return np.nan
    return float(special.chdtrc(len(cols), stat))


def _contrast(design: _Design, high: int, low: int) -> np.ndarray:
    """Row vector L with L @ beta = (group ``high``) - (group ``low``)."""
    L = np.zeros(design.X.shape[1])
    if high in design.group_cols:
        L[design.group_cols[high]] += 1.0
    if low in design.group_cols:
        L[design.group_cols[low]] -= 1.0
    return L


def _with_group(design: _Design, X: np.ndarray, g: int) -> np.ndarray:
    """``X`` with every row's group set to ``g``."""
    out = X.copy()
    cols = list(design.group_cols.values())
    out[:, cols] = 0.0
    if g in design.group_cols:
        out[:, design.group_cols[g]] = 1.0
    return out


def _separated(hit: np.ndarray, codes: np.ndarray, groups_in: np.ndarray, names: list) -> str | None:
    """Name the group whose rows all hit or all miss (the group coefficient would run off to infinity)."""
    if hit.min() == hit.max():
        return "every image"
    for g in groups_in:
        rows = hit[codes == g]
        if rows.min() == rows.max():
            return f"group '{names[g]}'"
    return None


# -- result -------------------------------------------------------------------------------------------

#: Columns of the adjusted table, in order (besides attribute and keypoint).
RESULT_COLUMNS = ("covariates", "contrast", "n_rows", "n_images", "effect_mm", "ci_low", "ci_high", "p_value",
                  "p_adjusted", "significant", "sdr_gap", "sdr_ci_low", "sdr_ci_high", "odds_ratio",
                  "odds_ratio_ci_low", "odds_ratio_ci_high", "sdr_p_value", "sdr_p_adjusted", "sdr_significant")


@dataclass
class AdjustedResult:
    """Adjusted disparities of every (attribute, keypoint).

    Attributes
    ----------
    table : pandas.DataFrame
        One row per (attribute, keypoint), columns ``attribute``, ``keypoint``
        and :data:`RESULT_COLUMNS` (``contrast`` is ``"high vs low"``, the raw DP
        pair; NaN where a model could not be fitted).
    covariates : list of str
    alpha, ci : float
    correction : str
        The correction applied (``holm`` where the audit asked for Westfall-Young).
    working_correlation : str
    unit : str
    warnings : list of str
    """

    table: pd.DataFrame
    covariates: list
    alpha: float
    ci: float
    correction: str
    working_correlation: str
    unit: str
    warnings: list = field(default_factory=list)

    def settings(self) -> dict:
        """The JSON ``adjustment`` block: what was adjusted for and how."""
        return {"covariates": list(self.covariates), "alpha": self.alpha, "ci": self.ci,
                "correction": self.correction, "working_correlation": self.working_correlation,
                "unit": self.unit, "method": "GEE, clusters = images, robust (sandwich) covariance; "
                                             "effect = raw DP pair; p = joint Wald test of the attribute"}

    def join(self, table: pd.DataFrame) -> pd.DataFrame:
        """Add the adjusted columns, prefixed ``adjusted_``, to a per-keypoint table."""
        extra = self.table.rename(columns={c: f"adjusted_{c}" for c in RESULT_COLUMNS})
        keys = table[["attribute", "keypoint"]].astype(str)
        extra = extra.assign(_a=extra["attribute"].astype(str), _k=extra["keypoint"].astype(str))
        merged = keys.merge(extra.drop(columns=["attribute", "keypoint"]), left_on=["attribute", "keypoint"],
                            right_on=["_a", "_k"], how="left").drop(columns=["_a", "_k", "attribute", "keypoint"])
        out = table.copy()
        for col in merged.columns:
            out[col] = merged[col].to_numpy()
        return out

    def record(self, attribute: str, keypoint: Any) -> dict:
        """The ``adjusted`` object of one JSON ``per_keypoint`` record."""
        hit = self.table[(self.table["attribute"] == attribute) & (self.table["keypoint"].astype(str) == str(keypoint))]
        if hit.empty:
            return {}
        row = hit.iloc[0].to_dict()
        rec = {"covariates": list(self.covariates), "contrast": row["contrast"], "unit": self.unit}
        for col in RESULT_COLUMNS[2:]:
            value = row[col]
            rec[col] = bool(value) if col in ("significant", "sdr_significant") else value
        return rec


def _correct(p: np.ndarray, correction: str) -> np.ndarray:
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = (benjamini_hochberg if correction == "bh" else holm)(p[ok])
    return out


def _pooled_pair(hit: np.ndarray, codes: np.ndarray, groups_in: np.ndarray) -> tuple[int, int]:
    sdr = np.array([hit[codes == g].mean() for g in groups_in])
    return int(groups_in[int(np.argmax(sdr))]), int(groups_in[len(sdr) - 1 - int(np.argmin(sdr[::-1]))])


def adjusted_disparities(study: Any, covariates: Covariates, *, threshold: float, alpha: float = 0.05,
                         correction: str = "bh", ci: float = 0.95, valid: dict | None = None,
                         pairs: dict | None = None, working_correlation: str = "auto") -> AdjustedResult:
    """Covariate-adjusted gaps per (attribute, keypoint), by GEE with images as clusters.

    Parameters
    ----------
    study : fairlandmark.audit.Study
        The prepared study (errors per (run, image) row, groups, runs).
    covariates : Covariates
        From :func:`check_covariates`.
    threshold : float
        Primary SDR threshold (a hit is ``error <= threshold``; missing = miss).
    alpha : float, default 0.05
    correction : {"bh", "holm", "westfall-young"}, default "bh"
        Over all adjusted tests; "westfall-young" is applied as Holm.
    ci : float, default 0.95
        Coverage of the Wald intervals.
    valid : dict of str -> ndarray of bool, shape (R, G), optional
        Groups that take part in DP per run (the audit's ``Observed.valid``);
        default all.
    pairs : dict of str -> (ndarray, ndarray), optional
        Per attribute, the (high, low) group index per keypoint of the raw DP
        pair; default the pair of pooled SDRs.
    working_correlation : {"auto", "independence", "exchangeable"}
        ``auto`` = independence, fitted for all keypoints at once; the sandwich
        makes it valid whatever the correlation of an image's rows.
        ``exchangeable`` fits one statsmodels GEE per model (slower; more
        efficient when runs differ a lot within an image).

    Returns
    -------
    AdjustedResult

    Examples
    --------
    >>> from fairlandmark import audit_arrays
    >>> rng = np.random.default_rng(0)
    >>> n = 120; sex = np.repeat(["F", "M"], n // 2); site = rng.choice(["a", "b"], n)
    >>> true = np.zeros((n, 1, 2)); pred = true.copy(); pred[:, 0, 0] = rng.gamma(2.0, 1.0, n)
    >>> res = audit_arrays(pred, true, {"sex": sex}, spacing_mm=1.0, covariates={"site": site}, adjust=["site"],
    ...                    significance=False)
    >>> row = res.adjusted.table.iloc[0]
    >>> row["contrast"], bool(row["sdr_ci_low"] < row["sdr_gap"] < row["sdr_ci_high"])
    ('M vs F', True)
    """
    if not 0 < alpha < 1:
        raise InputError(MSG_OPTION.format(name="alpha", rule="must be between 0 and 1", value=alpha))
    if not 0 < ci < 1:
        raise InputError(MSG_OPTION.format(name="ci", rule="must be between 0 and 1", value=ci))
    if working_correlation not in ("auto", "independence", "exchangeable"):
        raise InputError(MSG_OPTION.format(name="working_correlation", value=working_correlation,
                                           rule="must be auto, independence or exchangeable"))
    applied = "holm" if correction == "westfall-young" else correction
    if applied not in ("bh", "holm"):
        raise InputError(MSG_OPTION.format(name="correction", rule="must be bh, holm or westfall-young",
                                           value=correction))
    z = float(special.ndtri(0.5 + ci / 2))
    coding = study.coding
    errors = np.asarray(study.errors, dtype=float)
    row_run = np.asarray(study.row_run)
    row_image = np.asarray(study.row_image).astype(str)
    cov_rows = covariates.frame.reindex(row_image)
    _, clusters_all = np.unique(row_image, return_inverse=True)
    present = ~np.isnan(errors)
    hits = present & (np.where(present, errors, np.inf) <= threshold)
    notes: list = []
    rows = []
    for attribute in coding.attributes:
        codes_all = coding.row_codes(attribute)
        G = len(coding.groups[attribute])
        ok = np.ones((study.n_runs, G), dtype=bool) if valid is None else np.asarray(valid[attribute], dtype=bool)
        keep = ok[row_run, codes_all]
        codes = codes_all[keep]
        groups_in = np.unique(codes)
        for name in covariates.names:
            measure, value = association(codes, cov_rows[name].to_numpy()[keep], name in covariates.numeric)
            if value >= COLLINEARITY_WARN:
                notes.append(MSG_COLLINEAR.format(attribute=attribute, col=name, measure=measure, value=value))
        design = _design(codes, groups_in, row_run[keep], study.n_runs, cov_rows[keep], covariates.numeric) \
            if len(groups_in) >= 2 else None
        clusters = clusters_all[keep]
        correlation = "independence" if working_correlation == "auto" else working_correlation
        n_images = len(np.unique(clusters))
        fast = None
        if design is not None and correlation == "independence":
            # Working independence: every keypoint at once, vectorised (statsmodels fits one model at a time).
            index = cluster_index(clusters)
            fast = {"error": _fit_independence(design.X, np.nan_to_num(errors[keep]), present[keep], index, False),
                    "hit": _fit_independence(design.X, hits[keep].astype(float), np.ones_like(present[keep]),
                                             index, True)}
        for k, kp in enumerate(study.keypoints):
            row = {"attribute": attribute, "keypoint": kp, "covariates": ", ".join(covariates.names),
                   "contrast": None, "n_rows": int(keep.sum()), "n_images": n_images}
            row.update({c: np.nan for c in RESULT_COLUMNS[4:]})
            rows.append(row)
            if design is None:
                continue
            X = design.X
            hit = hits[keep, k].astype(float)
            if pairs is not None:
                high, low = int(pairs[attribute][0][k]), int(pairs[attribute][1][k])
            else:
                high, low = _pooled_pair(hit, codes, groups_in)
            if high == low or high not in groups_in or low not in groups_in:
                continue
            names = coding.groups[attribute]
            row["contrast"] = f"{names[high]} vs {names[low]}"
            if np.linalg.matrix_rank(X) < X.shape[1]:
                notes.append(MSG_CONFOUNDED.format(attribute=attribute, cols=", ".join(covariates.names), keypoint=kp))
                continue
            L = _contrast(design, high, low)
            group_cols = list(design.group_cols.values())
            # Error model: rows with a prediction.
            has = present[keep, k]
            if has.sum() <= X.shape[1] or np.linalg.matrix_rank(X[has]) < X.shape[1]:
                notes.append(MSG_TOO_FEW.format(attribute=attribute, keypoint=kp))
            else:
                if fast is not None:
                    fit, problem = _fast_fit(fast["error"], k)
                else:
                    fit, problem = _fit_gee(errors[keep, k][has], X[has], clusters[has], _sm().families.Gaussian(),
                                            correlation, _sm())
                if fit is None:
                    notes.append(MSG_NO_CONVERGE.format(attribute=attribute, keypoint=kp, model="error",
                                                        detail=problem))
                else:
                    est = -float(L @ fit.params)  # low minus high
                    se = float(np.sqrt(max(L @ fit.cov @ L, 0.0)))
                    row.update(effect_mm=est, ci_low=est - z * se, ci_high=est + z * se,
                               p_value=_wald(fit.params, fit.cov, group_cols))
            # Hit model: every row (missing = miss).
            separated = _separated(hit, codes, groups_in, names)
            if separated is not None:
                notes.append(MSG_SEPARATION.format(attribute=attribute, keypoint=kp, what=separated))
                continue
            if fast is not None:
                fit, problem = _fast_fit(fast["hit"], k)
            else:
                fit, problem = _fit_gee(hit, X, clusters, _sm().families.Binomial(), correlation, _sm())
            if fit is not None and np.abs(fit.params[group_cols]).max() > _SEPARATION_LOGIT:
                fit, problem = None, "coefficients diverge (quasi-separation)"
            if fit is None:
                notes.append(MSG_NO_CONVERGE.format(attribute=attribute, keypoint=kp, model="hit", detail=problem))
                continue
            b = fit.params
            p_high = 1.0 / (1.0 + np.exp(-(_with_group(design, X, high) @ b)))
            p_low = 1.0 / (1.0 + np.exp(-(_with_group(design, X, low) @ b)))
            gap = float(p_high.mean() - p_low.mean())
            grad = (p_high * (1 - p_high)) @ _with_group(design, X, high) / len(X) \
                - (p_low * (1 - p_low)) @ _with_group(design, X, low) / len(X)
            se_gap = float(np.sqrt(max(grad @ fit.cov @ grad, 0.0)))
            log_or = float(L @ b)
            se_or = float(np.sqrt(max(L @ fit.cov @ L, 0.0)))
            row.update(sdr_gap=gap, sdr_ci_low=gap - z * se_gap, sdr_ci_high=gap + z * se_gap,
                       odds_ratio=float(np.exp(log_or)), odds_ratio_ci_low=float(np.exp(log_or - z * se_or)),
                       odds_ratio_ci_high=float(np.exp(log_or + z * se_or)),
                       sdr_p_value=_wald(b, fit.cov, group_cols))
    table = pd.DataFrame(rows, columns=["attribute", "keypoint", *RESULT_COLUMNS])
    for side in ("", "sdr_"):
        p = table[f"{side}p_value"].to_numpy(dtype=float)
        adj = _correct(p, applied)
        table[f"{side}p_adjusted"] = adj
        table[f"{side}significant"] = np.where(np.isnan(adj), False, adj < alpha).astype(bool)
    unit = getattr(study, "unit", "mm")
    return AdjustedResult(table=table, covariates=covariates.names, alpha=float(alpha), ci=float(ci),
                          correction=applied, unit=unit,
                          working_correlation="independence" if working_correlation == "auto" else working_correlation,
                          warnings=list(dict.fromkeys(notes)))
