"""Power and sample-size planning for the audit's per-keypoint DP test.

"Not significant" should read "no gap above X could be seen", not "fair". This
module gives X, the *minimal detectable DP* (MDD): the smallest SDR gap between
two groups that the audit would flag with the requested power (default 0.8),
under the audit's own test, and the number of images per group needed to
detect a target gap.

The audit's test, as modelled here
----------------------------------
* statistic: the mean over runs of the per-run DP, the range (largest minus
  smallest) of the group SDRs of the groups that take part in DP;
* null: image labels permuted within each run (disjoint runs), or once for
  all runs when the runs share their images (docs/significance.md);
* multiple testing: ``m`` tests (attributes x keypoints) at level ``alpha``. A
  planted gap at one keypoint is flagged when its p-value passes the per-test
  level ``alpha / m``: exact for Holm's first step and for Benjamini-Hochberg
  when the other ``m - 1`` tests are null, conservative for Westfall-Young,
  which gains from correlated tests. So the MDD is for a gap at a single
  keypoint; gaps at many keypoints at once are easier to see under BH.

Computation (validated by simulating whole audits, see ``tests/test_power.py``
and ``benchmarks/power_validation.py``), ``method="auto"``: for two groups in
one run, simulated studies draw binomial hit counts and get their exact
permutation p-value given their own total hits (hypergeometric). Otherwise the
group SDRs are normal with binomial variance ``p (1 - p) / n`` and each study
is judged against the permutation null at its own pooled SDR per run, that
null's shape from a Monte-Carlo sample of standard normals, plus a continuity
correction of half a lattice step (hit counts are integers: without it the
plan overstated power by about 0.06 at 100 images per group). The audit's own
permutation count enters too: its p-value is a Monte-Carlo estimate, flagged
when it passes the level. Common random numbers make the power monotone in the
gap, found by bisection.

Where the gap is planted: between the *two smallest* groups (the hardest pair
to see), placed so that the pair's pooled SDR stays the keypoint's SDR, the
other groups at that SDR. The MDD
is therefore the largest over pairs: no gap at least this large between any two
groups would be missed with probability above ``1 - power``.

Runs: when the runs evaluate disjoint images (cross-validation folds), their
SDRs are independent; when they evaluate the same images, the planted
difference is modelled as repeating identically in every run (the
conservative end: averaging runs then does not average away image noise),
and the audit permutes each image's label once for all its runs, so such a
design is planned as its single run (:meth:`PlanDesign.as_tested`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import special

from fairlandmark.exceptions import InputError

__all__ = [
    "PlanDesign",
    "PlanResult",
    "per_test_level",
    "power_at_gap",
    "detectable_dp",
    "images_for_gap",
    "plan_from_audit",
    "plan_from_assumptions",
    "min_detectable_dp_for_audit",
    "detectable_curve",
    "planted_sdr",
]

CORRECTIONS = ("bh", "holm", "westfall-young")
#: Monte-Carlo draws for the power of each candidate gap (Monte-Carlo sd of a power of 0.8: 0.006).
DEFAULT_SIMULATIONS = 4000
#: Bisection steps on the gap (a width of 2**-30) and on log images per group.
_BISECTION_STEPS = 16
_MAX_IMAGES = 1_000_000
_NULL_CHUNK = 100_000

MSG_OPTION = "{name}: {rule}, got {value!r}"
MSG_SIZES = ("group sizes: give two or more groups with at least 2 images each (per run), got {value!r}; "
             "e.g. --group-sizes 120,80")
MSG_SDR = "sdr: give SDR values between 0 and 1, one per keypoint, got {value!r}"
MSG_NOT_AUDIT = ("{src}: not an audit document (no 'per_keypoint' records with 'n_by_group' and 'sdr'); "
                 "give the JSON written by fairlandmark audit --json")
MSG_PERMUTATIONS = ("the audit used {b} permutations, so its smallest p-value is {pmin:.2g}, above the per-test "
                    "level {level:.2g} (alpha {alpha:g} / {m} tests): it could not flag any gap; "
                    "rerun it with --permutations {need} or more")


# -- options --------------------------------------------------------------------------------------

def _check_fraction(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(MSG_OPTION.format(name=name, rule="must be a number between 0 and 1", value=value)) from None
    if not 0 < value < 1:
        raise InputError(MSG_OPTION.format(name=name, rule="must be between 0 and 1 (exclusive)", value=value))
    return value


def per_test_level(alpha: float, n_tests: int, correction: str = "bh") -> float:
    """Level a single gap's p-value must pass among ``n_tests`` tests.

    ``alpha / n_tests`` for every correction (see the module notes).

    Examples
    --------
    >>> per_test_level(0.05, 10, "holm")
    0.005
    """
    if correction not in CORRECTIONS:
        raise InputError(MSG_OPTION.format(name="correction", rule=f"must be one of {', '.join(CORRECTIONS)}",
                                           value=correction))
    if isinstance(n_tests, bool) or int(n_tests) != n_tests or n_tests < 1:
        raise InputError(MSG_OPTION.format(name="n_tests", rule="must be an integer >= 1", value=n_tests))
    return _check_fraction("alpha", alpha) / int(n_tests)


@dataclass(frozen=True)
class PlanDesign:
    """Design of one audited attribute: what the test sees.

    Parameters
    ----------
    sizes : ndarray of int, shape (R, G)
        Images per run and group (groups that take part in DP).
    shared_images : bool
        Whether the runs evaluate the same images.
    """

    sizes: np.ndarray
    shared_images: bool = False

    def __post_init__(self) -> None:
        sizes = np.atleast_2d(np.asarray(self.sizes, dtype=float))
        if sizes.ndim != 2 or sizes.shape[1] < 2 or not np.isfinite(sizes).all() or (sizes < 2).any():
            raise InputError(MSG_SIZES.format(value=self.sizes.tolist() if hasattr(self.sizes, "tolist")
                                              else self.sizes))
        object.__setattr__(self, "sizes", sizes)

    @property
    def n_runs(self) -> int:
        return self.sizes.shape[0]

    @property
    def continuity(self) -> float:
        """Half a lattice step of the statistic: hit counts are integers, so a gap moves in steps.

        Moving one hit from one group of the planted pair to the other changes
        their SDR difference by ``1/n_a + 1/n_b`` in a run; the mean over R runs
        moves in steps R times finer.
        """
        a, b = self.pair
        step = np.mean(1.0 / self.sizes[:, a] + 1.0 / self.sizes[:, b])
        return float(step / (2 * self.n_runs))

    @property
    def pair(self) -> tuple:
        """The two smallest groups (by images over runs): where the gap is planted."""
        order = np.argsort(self.sizes.sum(axis=0), kind="stable")
        return int(order[0]), int(order[1])

    def as_tested(self) -> "PlanDesign":
        """The design as the audit's test sees it: runs of the same images are one run.

        The audit permutes an image's label once for all its runs (docs/significance.md), and the plan
        repeats a study's hits identically in every shared run, so the mean over runs is one run's
        statistic, with one run's null.

        Examples
        --------
        >>> PlanDesign([[80, 80]] * 3, shared_images=True).as_tested().sizes.tolist()
        [[80.0, 80.0]]
        """
        if self.shared_images and self.n_runs > 1:
            return PlanDesign(self.sizes[:1], False)
        return self

    @classmethod
    def equal(cls, n_per_group: float, n_groups: int, n_runs: int = 1, shared_images: bool = False) -> "PlanDesign":
        """``n_per_group`` distinct images per group, split evenly over disjoint runs or repeated in shared ones."""
        per_run = n_per_group if shared_images else n_per_group / n_runs
        return cls(np.full((n_runs, n_groups), float(per_run)), shared_images)


# -- the core: critical value and power --------------------------------------------------------------

def _alternative_draws(design: PlanDesign, n_sim: int, seed: int) -> np.ndarray:
    """Common standard normals of shape (n_sim, R, G); one draw repeated over runs when they share images."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 11]))
    runs = 1 if design.shared_images else design.n_runs
    z = rng.standard_normal((n_sim, runs, design.sizes.shape[1]))
    return np.broadcast_to(z, (n_sim,) + design.sizes.shape)


def planted_sdr(sdr: np.ndarray, gap: np.ndarray, design: PlanDesign) -> np.ndarray:
    """True SDR per keypoint and group (K, G): the gap between the two smallest groups.

    Placed so that the pair's pooled SDR stays the keypoint's SDR (the larger
    group moves less), shifted inside [0, 1] where that is impossible.
    """
    a, b = design.pair
    n_a, n_b = design.sizes[:, a].sum(), design.sizes[:, b].sum()
    high = np.clip(sdr + gap * n_b / (n_a + n_b), gap, 1.0)
    groups = np.repeat(sdr[:, None], design.sizes.shape[1], axis=1)
    groups[:, a] = high
    groups[:, b] = high - gap
    return groups


def _range(values: np.ndarray) -> np.ndarray:
    """Largest minus smallest over the last (group) axis.

    Elementwise over the few groups: several times faster than numpy's reduction along a short last axis.
    """
    high = values[..., 0].copy()
    low = high.copy()
    for g in range(1, values.shape[-1]):
        np.maximum(high, values[..., g], out=high)
        np.minimum(low, values[..., g], out=low)
    return high - low


def _unit_null(design: PlanDesign, level: float, seed: int) -> np.ndarray:
    """Sorted null sample of the statistic for unit hit variance: mean over runs of the range of N(0, 1/n_rg).

    At least 50 / level draws, so the tail at the level rests on 50 or more of them (a relative error of about
    14% on the level, 2% on the detectable gap); single precision, which is plenty for a tail probability.
    """
    scale = (1.0 / np.sqrt(design.sizes)).astype(np.float32)
    n_draws = int(min(max(20_000, math.ceil(50 / level)), 2_000_000))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7]))
    out = np.empty(n_draws)
    for start in range(0, n_draws, _NULL_CHUNK):
        n = min(_NULL_CHUNK, n_draws - start)
        z = rng.standard_normal((n,) + design.sizes.shape, dtype=np.float32)
        z *= scale
        out[start:start + n] = _range(z).mean(axis=-1)
    return np.sort(out)


def _log_comb(n: Any, k: Any) -> Any:
    return special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)


def _hypergeom_pmf(k: np.ndarray, total: int, good: int, drawn: int) -> np.ndarray:
    """P(k good among ``drawn`` out of ``total`` with ``good`` good ones); zero outside the support.

    Examples
    --------
    >>> float(_hypergeom_pmf(np.array([1]), 4, 2, 2)[0])  # C(2,1) C(2,1) / C(4,2)
    0.6666666666666666
    """
    k = np.asarray(k, dtype=float)
    inside = (k >= max(0, drawn - (total - good))) & (k <= min(good, drawn))
    kk = np.where(inside, k, 0.0)
    with np.errstate(invalid="ignore"):
        log_p = _log_comb(good, kk) + _log_comb(total - good, drawn - kk) - _log_comb(total, drawn)
    return np.where(inside, np.exp(log_p), 0.0)


def _exact_two_group_tail(hits: np.ndarray, sizes: np.ndarray, cache: dict) -> np.ndarray:
    """Exact permutation p-values of |SDR_1 - SDR_2| for two groups, given each study's total hits.

    Permuting labels keeps the total hits H, so group 1's hits are hypergeometric; one table row per H met.
    """
    n1, n2 = int(sizes[0]), int(sizes[1])
    table = cache.setdefault("exact", {})
    total = hits.sum(axis=1)
    for H in np.unique(total):
        H = int(H)
        if H not in table:
            k = np.arange(n1 + 1)
            pmf = _hypergeom_pmf(k, n1 + n2, H, n1)
            gap = np.round(np.abs(k / n1 - (H - k) / n2), 12)  # mirror-image gaps tie exactly
            order = np.argsort(-gap, kind="stable")
            # P(gap >= gap_k): sum of pmf over every k' whose gap is at least gap_k (ties included)
            tail_sorted = np.cumsum(pmf[order])
            last_tie = np.searchsorted(-gap[order], -gap[order], side="right") - 1
            row = np.empty(n1 + 1)
            row[order] = tail_sorted[last_tie]
            table[H] = row
    keys = np.unique(total)
    rows = np.stack([table[int(H)] for H in keys])
    return rows[np.searchsorted(keys, total), hits[:, 0]]


def _reject_probability(tail: np.ndarray, level: float, permutations: int | None) -> np.ndarray:
    """Probability that the audit flags a statistic whose exact null tail probability is ``tail``.

    With B permutations the audit's p-value is (1 + #{permuted >= observed}) / (1 + B), the count being
    Binomial(B, tail), and it flags when that p-value passes ``level``. Without B: flag when tail <= level.
    """
    if not permutations:
        return (tail <= level).astype(float)
    largest_count = math.floor(level * (permutations + 1) + 1e-9) - 1
    if largest_count < 0:
        return np.zeros_like(tail)
    return special.bdtr(largest_count, permutations, tail)


def _binomial_power(sdr: np.ndarray, gap: np.ndarray, design: PlanDesign, level: float, n_sim: int, seed: int,
                    cache: dict, permutations: int | None = None) -> np.ndarray:
    """Monte-Carlo power per keypoint: binomial hit counts, the permutation null at each study's own pooled SDR.

    The audit's permutations condition on the hits a study happens to have, so its null is that of the realized
    pooled SDR per run (normal, scaled by sqrt(p (1 - p)), plus half a lattice step for the integer counts).
    Common random numbers: the same stream for every gap.
    """
    if "unit" not in cache:
        two = design.n_runs == 1 and design.sizes.shape[1] == 2
        cache["unit"] = None if two else _unit_null(design, level, seed)
    unit = cache["unit"]
    p = planted_sdr(sdr, gap, design)
    sizes = np.round(design.sizes).astype(np.int64)
    runs = 1 if design.shared_images else design.n_runs
    rng_seed = np.random.SeedSequence([int(seed), 11])
    out = np.empty(len(sdr))
    for k in range(len(sdr)):
        rng = np.random.default_rng(rng_seed)
        hits = np.broadcast_to(rng.binomial(sizes[:runs], p[k], size=(n_sim, runs, sizes.shape[1])),
                               (n_sim,) + sizes.shape)
        rate = hits / sizes
        stat = _range(rate).mean(axis=-1)
        pooled = hits.sum(axis=-1) / sizes.sum(axis=-1)  # (n_sim, R)
        spread = np.sqrt(pooled * (1 - pooled)).mean(axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            standard = np.where(spread > 0, (stat - design.continuity) / spread, -np.inf)
        if unit is None:  # two groups, one run: the exact permutation (hypergeometric) null
            tail = _exact_two_group_tail(hits[:, 0, :], sizes[0], cache)
        else:
            tail = 1.0 - np.searchsorted(unit, standard, side="left") / len(unit)
        out[k] = np.mean(_reject_probability(np.minimum(tail, 1.0), level, permutations))
    return out


def _normal_tail(standard: np.ndarray, design: PlanDesign, unit: np.ndarray | None) -> np.ndarray:
    """Null tail probability of standardised statistics (unit hit variance)."""
    if unit is None:  # two groups, one run: |N(0, 1/n_a + 1/n_b)|
        return 2.0 * special.ndtr(-standard / np.sqrt(np.sum(1.0 / design.sizes)))
    return 1.0 - np.searchsorted(unit, standard, side="left") / len(unit)


def _power(sdr: np.ndarray, gap: np.ndarray, design: PlanDesign, level: float, unit: np.ndarray | None,
           z: np.ndarray, permutations: int | None = None) -> np.ndarray:
    """Monte-Carlo power per keypoint under the normal approximation (common random numbers ``z``).

    Vectorised over keypoints, in chunks that bound memory at about 4 million numbers.
    """
    p = planted_sdr(sdr, gap, design)  # (K, G)
    sd = np.sqrt(p * (1 - p))[:, None, None, :] / np.sqrt(design.sizes)[None, None]  # (K, 1, R, G)
    out = np.empty(len(sdr))
    chunk = max(1, 4_000_000 // max(z.size, 1))
    for start in range(0, len(sdr), chunk):
        part = slice(start, start + chunk)
        values = p[part, None, None, :] + sd[part] * z[None]
        stat = _range(values).mean(axis=-1)  # (k, n_sim)
        # The permutations condition on each study's own hits: its null is scaled by its own pooled SDR per run.
        share = design.sizes / design.sizes.sum(axis=-1, keepdims=True)  # (R, G)
        own = np.clip(np.einsum("ksrg,rg->ksr", values, share), 0.0, 1.0)  # pooled SDR per study and run
        own_spread = np.sqrt(own * (1 - own)).mean(axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            standard = np.where(own_spread > 0, (stat - design.continuity) / own_spread, -np.inf)
        tail = _normal_tail(standard, design, unit)
        out[part] = np.mean(_reject_probability(np.minimum(tail, 1.0), level, permutations), axis=1)
    return out


def _engine(sdr: np.ndarray, design: PlanDesign, *, level: float, n_sim: int, seed: int, method: str,
            permutations: int | None) -> Any:
    """The power function ``gap -> power`` for fixed SDRs, design and test (common random numbers)."""
    two_groups_one_run = design.n_runs == 1 and design.sizes.shape[1] == 2
    if method == "auto":
        method = "binomial" if two_groups_one_run else "normal"
    if method == "binomial":
        cache: dict = {}
        return lambda gap: _binomial_power(sdr, gap, design, level, n_sim, seed, cache, permutations)
    if method == "normal":
        unit = None if two_groups_one_run else _unit_null(design, level, seed)
        z = _alternative_draws(design, n_sim, seed)
        return lambda gap: _power(sdr, gap, design, level, unit, z, permutations)
    raise InputError(MSG_OPTION.format(name="method", rule="must be auto, binomial or normal", value=method))


def _check_sdr(sdr: Any) -> np.ndarray:
    values = np.atleast_1d(np.asarray(sdr, dtype=float))
    if values.ndim != 1 or len(values) == 0 or not ((values >= 0) & (values <= 1)).all():
        raise InputError(MSG_SDR.format(value=sdr))
    return values


def power_at_gap(sdr: Any, gap: Any, design: PlanDesign, *, alpha: float = 0.05, n_tests: int = 1,
                 correction: str = "bh", n_sim: int = DEFAULT_SIMULATIONS, seed: int = 0,
                 method: str = "auto", permutations: int | None = None) -> np.ndarray:
    """Power of the audit to flag a gap ``gap`` at keypoints with SDR ``sdr``.

    Parameters
    ----------
    sdr : float or array-like, shape (K,)
        Keypoint SDR at the primary threshold (all groups together).
    gap : float or array-like, shape (K,)
        Planted SDR gap between the two smallest groups.
    design : PlanDesign
    alpha, n_tests, correction
        The audit's level, number of tests (attributes x keypoints) and correction.
    n_sim : int, default 4000
        Monte-Carlo draws.
    seed : int, default 0
    method : {"auto", "binomial", "normal"}, default "auto"
        ``binomial``: binomial hit counts judged against the permutation null
        at each simulated study's own hits (exact, hypergeometric, for two
        groups in one run). ``normal``: normal group SDRs with a continuity
        correction, common random numbers, vectorised (fast). ``auto``:
        binomial for two groups in one run, normal otherwise (where the two
        agree within 0.003 on the validated designs).
    permutations : int, optional
        The audit's permutations: its p-value is itself a Monte-Carlo estimate,
        which changes the power a little near the level.

    Returns
    -------
    ndarray, shape (K,)

    Examples
    --------
    >>> design = PlanDesign([[100, 100]])
    >>> float(power_at_gap(0.7, 0.0, design, alpha=0.05)[0]) < 0.1
    True
    """
    sdr = _check_sdr(sdr)
    design = design.as_tested()
    gap = np.broadcast_to(np.asarray(gap, dtype=float), sdr.shape).copy()
    level = per_test_level(alpha, n_tests, correction)
    return _engine(sdr, design, level=level, n_sim=n_sim, seed=seed, method=method, permutations=permutations)(gap)


def detectable_dp(sdr: Any, design: PlanDesign, *, power: float = 0.8, alpha: float = 0.05, n_tests: int = 1,
                  correction: str = "bh", n_sim: int = DEFAULT_SIMULATIONS, seed: int = 0,
                  method: str = "auto", permutations: int | None = None,
                  sdr_grid: int | None = 13) -> np.ndarray:
    """Minimal detectable DP per keypoint: the smallest gap flagged with probability ``power``.

    NaN where even a gap of 1 (one group always hits, the other never) would
    be flagged less often than ``power``. ``method`` and ``permutations`` as
    in :func:`power_at_gap`. With more than ``sdr_grid`` distinct SDRs the
    MDD is computed on that many evenly spaced SDRs and interpolated (it is
    smooth in the SDR; None: every SDR).

    Examples
    --------
    Two groups of 100 images, one test at 0.05, SDR 0.7: about 0.19.

    >>> float(detectable_dp(0.7, PlanDesign([[100, 100]]))[0].round(2))
    0.19
    """
    sdr = _check_sdr(sdr)
    design = design.as_tested()
    power = _check_fraction("power", power)
    level = per_test_level(alpha, n_tests, correction)
    unique = np.unique(sdr)
    if sdr_grid is not None and len(unique) > sdr_grid:
        # The MDD is a smooth function of the SDR: compute it on a grid and interpolate.
        grid = np.linspace(unique[0], unique[-1], int(sdr_grid))
        on_grid = detectable_dp(grid, design, power=power, alpha=alpha, n_tests=n_tests, correction=correction,
                                n_sim=n_sim, seed=seed, method=method, permutations=permutations, sdr_grid=None)
        if np.isfinite(on_grid).all():
            return np.interp(sdr, grid, on_grid)
    power_of = _engine(sdr, design, level=level, n_sim=n_sim, seed=seed, method=method, permutations=permutations)
    lo, hi = np.zeros_like(sdr), np.ones_like(sdr)
    reachable = power_of(hi) >= power
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2
        enough = power_of(mid) >= power
        hi = np.where(enough, mid, hi)
        lo = np.where(enough, lo, mid)
    return np.where(reachable, hi, np.nan)


def images_for_gap(sdr: Any, gap: float, *, n_groups: int = 2, n_runs: int = 1, shared_images: bool = False,
                   power: float = 0.8, alpha: float = 0.05, n_tests: int = 1, correction: str = "bh",
                   n_sim: int = DEFAULT_SIMULATIONS, seed: int = 0, permutations: int | None = None,
                   sdr_grid: int | None = 13) -> np.ndarray:
    """Images per group (equal groups) needed to flag a gap ``gap`` with probability ``power``.

    Returns an integer per keypoint (distinct images per group, over all runs);
    NaN where more than a million would be needed.

    Examples
    --------
    >>> int(images_for_gap(0.7, 0.10, n_tests=1)[0]) > 300
    True
    """
    sdr = _check_sdr(sdr)
    if shared_images:  # the same images in every run: one run for the test (PlanDesign.as_tested)
        n_runs, shared_images = 1, False
    power = _check_fraction("power", power)
    gap_value = float(gap)
    if not 0 < gap_value <= 1:
        raise InputError(MSG_OPTION.format(name="target gap", rule="must be in (0, 1], e.g. 0.10", value=gap))
    level = per_test_level(alpha, n_tests, correction)
    unique = np.unique(sdr)
    if sdr_grid is not None and len(unique) > sdr_grid:  # smooth in the SDR: a grid, then interpolation
        grid = np.linspace(unique[0], unique[-1], int(sdr_grid))
        on_grid = images_for_gap(grid, gap, n_groups=n_groups, n_runs=n_runs, shared_images=shared_images,
                                 power=power, alpha=alpha, n_tests=n_tests, correction=correction, n_sim=n_sim,
                                 seed=seed, permutations=permutations, sdr_grid=None)
        if np.isfinite(on_grid).all():
            return np.ceil(np.interp(sdr, grid, on_grid))
    # With equal groups the unit null scales as 1/sqrt(images per run): sample it once, at 100.
    base = PlanDesign(np.full((n_runs, n_groups), 100.0), shared_images)
    unit_100 = None if (n_runs == 1 and n_groups == 2) else _unit_null(base, level, seed)
    z = _alternative_draws(base, n_sim, seed)
    gaps = np.full(sdr.shape, gap_value)

    def enough(n_total: np.ndarray) -> np.ndarray:
        out = np.empty(len(sdr), dtype=bool)
        for k in range(len(sdr)):
            per_run = max(n_total[k] if shared_images else n_total[k] / n_runs, 2.0)
            design = PlanDesign(np.full((n_runs, n_groups), per_run), shared_images)
            unit = None if unit_100 is None else unit_100 * np.sqrt(100.0 / per_run)
            out[k] = _power(sdr[k:k + 1], gaps[k:k + 1], design, level, unit, z, permutations)[0] >= power
        return out

    lo = np.full(sdr.shape, 2.0 * (1 if shared_images else n_runs))
    hi = np.full(sdr.shape, float(_MAX_IMAGES))
    reachable = enough(hi)
    for _ in range(40):
        if np.all(hi - lo <= 1):
            break
        mid = np.floor((lo + hi) / 2)
        ok = enough(mid)
        hi = np.where(ok, mid, hi)
        lo = np.where(ok, lo, mid)
    return np.where(reachable, hi, np.nan)


# -- plans ------------------------------------------------------------------------------------------------

@dataclass
class PlanResult:
    """A power plan: one row per (attribute, keypoint).

    Attributes
    ----------
    table : pandas.DataFrame
        ``attribute, keypoint, sdr, n_by_group, pair, min_detectable_dp, power,
        alpha, correction, n_tests, per_test_level, target_dp,
        n_per_group_for_target`` (+ ``observed_dp``, ``significant`` from an audit).
    settings : dict
    designs : dict of str -> PlanDesign
    warnings : list of str
    """

    table: pd.DataFrame
    settings: dict
    designs: dict
    warnings: list = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready: ``settings`` and ``records`` (one per attribute x keypoint)."""
        from fairlandmark.files import json_safe

        return json_safe({"settings": self.settings, "records": self.table.to_dict("records"),
                          "warnings": self.warnings})


def _plan(sdr_by_attribute: Mapping[str, tuple], designs: Mapping[str, PlanDesign], *, power: float, alpha: float,
          correction: str, n_tests: int, target_dp: float | None, n_sim: int, seed: int,
          group_names: Mapping[str, Sequence[str]], permutations: int | None) -> PlanResult:
    level = per_test_level(alpha, n_tests, correction)
    power = _check_fraction("power", power)
    frames = []
    for attribute, (keypoints, sdr) in sdr_by_attribute.items():
        design = designs[attribute]
        sdr = np.asarray(sdr, dtype=float)
        finite = np.isfinite(sdr)
        mdd = np.full(sdr.shape, np.nan)
        need = np.full(sdr.shape, np.nan)
        if finite.any():
            mdd[finite] = detectable_dp(sdr[finite], design, power=power, alpha=alpha, n_tests=n_tests,
                                        correction=correction, n_sim=n_sim, seed=seed, permutations=permutations)
            if target_dp is not None:
                need[finite] = images_for_gap(sdr[finite], target_dp, n_groups=design.sizes.shape[1],
                                              n_runs=design.n_runs, shared_images=design.shared_images, power=power,
                                              alpha=alpha, n_tests=n_tests, correction=correction, n_sim=n_sim,
                                              seed=seed, permutations=permutations)
        names = list(group_names[attribute])
        a, b = design.pair
        n_images = (design.sizes.max(axis=0) if design.shared_images else design.sizes.sum(axis=0))
        frames.append(pd.DataFrame({
            "attribute": attribute, "keypoint": list(keypoints), "sdr": sdr,
            "n_by_group": [dict(zip(names, n_images.astype(int).tolist()))] * len(sdr),
            "pair": f"{names[a]} vs {names[b]}",
            "min_detectable_dp": mdd, "power": power, "alpha": alpha, "correction": correction,
            "n_tests": n_tests, "per_test_level": level, "target_dp": target_dp,
            "n_per_group_for_target": need,
        }))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    settings = {"power": power, "alpha": alpha, "correction": correction, "n_tests": n_tests,
                "per_test_level": level, "target_dp": target_dp, "n_sim": n_sim, "seed": seed,
                "permutations": permutations,
                "method": "binomial hit counts, Monte-Carlo null of the run-mean range, flagged at alpha/m "
                          "(with the audit's permutation count); gap planted between the two smallest groups; "
                          "images for the target by the normal approximation"}
    return PlanResult(table=table, settings=settings, designs=dict(designs))


def _audit_designs(document: Mapping, src: str) -> tuple[dict, dict, dict, int]:
    """Per attribute: (keypoints, sdr), design, group names; and the number of tests, from an audit document."""
    records = document.get("per_keypoint") if isinstance(document, Mapping) else None
    if not records or not all(isinstance(r, Mapping) and "n_by_group" in r and "sdr" in r for r in records):
        raise InputError(MSG_NOT_AUDIT.format(src=src))
    n_runs = int(document.get("n_runs") or 1)
    n_images = document.get("n_images")
    in_dp = {(g["attribute"], g["group"]): bool(g.get("in_dp", True)) for g in document.get("groups") or []}
    sdr_by: dict = {}
    designs: dict = {}
    names: dict = {}
    n_tests = 0
    for rec in records:
        attribute = rec["attribute"]
        dp = rec.get("dp")
        n_tests += int(dp is not None and not (isinstance(dp, float) and math.isnan(dp)))
        if attribute not in designs:
            groups = [g for g, n in rec["n_by_group"].items() if in_dp.get((attribute, g), True) and n]
            totals = np.array([float(rec["n_by_group"][g]) for g in groups])
            shared = n_images is not None and n_runs > 1 and totals.sum() > float(n_images)
            per_run = np.tile(totals / n_runs, (n_runs, 1))
            try:
                designs[attribute] = PlanDesign(np.maximum(np.round(per_run), 0), shared)
            except InputError:
                continue  # fewer than two groups in DP: no test to plan
            names[attribute] = groups
            sdr_by[attribute] = ([], [])
        sdr_by[attribute][0].append(rec["keypoint"])
        value = rec.get("sdr")
        sdr_by[attribute][1].append(np.nan if value is None else float(value))
    return sdr_by, designs, names, max(n_tests, 1)


def plan_from_audit(document: Mapping, *, power: float = 0.8, target_dp: float | None = 0.10,
                    alpha: float | None = None, correction: str | None = None, n_sim: int = DEFAULT_SIMULATIONS,
                    seed: int = 0, source: str = "audit") -> PlanResult:
    """Plan from an audit document (the dict of ``fairlandmark audit --json``).

    The audit's own design: its groups in DP and their sizes, runs, primary
    threshold (through each keypoint's SDR), number of tests, and, unless
    overridden, its ``alpha`` and correction (0.05 and ``bh`` when the audit
    ran without significance).

    Returns
    -------
    PlanResult
        Its table also has ``observed_dp`` and ``significant`` from the audit.
    """
    sdr_by, designs, names, n_tests = _audit_designs(document, source)
    sig = document.get("significance") or {}
    alpha = float(alpha if alpha is not None else sig.get("alpha", 0.05))
    correction = correction or sig.get("correction", "bh")
    permutations = sig.get("permutations") or None
    result = _plan(sdr_by, designs, power=power, alpha=alpha, correction=correction, n_tests=n_tests,
                   target_dp=target_dp, n_sim=n_sim, seed=seed, group_names=names, permutations=permutations)
    level = result.settings["per_test_level"]
    if permutations and 1.0 / (permutations + 1) > level:
        result.warnings.append(MSG_PERMUTATIONS.format(b=permutations, pmin=1.0 / (permutations + 1), level=level,
                                                       alpha=alpha, m=n_tests, need=math.ceil(2 / level)))
        result.table["min_detectable_dp"] = np.nan
    observed = {(r["attribute"], str(r["keypoint"])): r for r in document["per_keypoint"]}
    keys = list(zip(result.table["attribute"], result.table["keypoint"].astype(str)))
    result.table["observed_dp"] = [observed[k].get("dp") for k in keys]
    result.table["significant"] = [observed[k].get("significant") for k in keys]
    result.settings.update(source=source, primary_threshold=document.get("primary_threshold"),
                           unit=document.get("unit"), n_runs=document.get("n_runs"))
    return result


def plan_from_assumptions(sdr: Any, group_sizes: Mapping[str, float] | Sequence[float], *, keypoints: Sequence |
                          None = None, n_runs: int = 1, shared_images: bool = False, n_tests: int | None = None,
                          power: float = 0.8, target_dp: float | None = 0.10, alpha: float = 0.05,
                          correction: str = "bh", attribute: str = "attribute", n_sim: int = DEFAULT_SIMULATIONS,
                          seed: int = 0, permutations: int | None = 10000) -> PlanResult:
    """Plan from assumed per-keypoint SDRs and group sizes (before any audit).

    Parameters
    ----------
    sdr : float or sequence of float
        Expected SDR per keypoint at the primary threshold.
    group_sizes : dict of str -> int, or sequence of int
        Distinct test images per group.
    n_tests : int, optional
        Number of tests of the audit; default the number of keypoints.
    permutations : int or None, default 10000
        Permutations the audit will run (None: an exact p-value).

    Examples
    --------
    >>> plan = plan_from_assumptions([0.7, 0.9], {"F": 100, "M": 100}, target_dp=None)
    >>> list(plan.table["keypoint"])
    [1, 2]
    """
    values = _check_sdr(sdr)
    if isinstance(group_sizes, Mapping):
        names, sizes = list(group_sizes), [float(v) for v in group_sizes.values()]
    else:
        sizes = [float(v) for v in group_sizes]
        names = [f"group {i + 1}" for i in range(len(sizes))]
    if isinstance(n_runs, bool) or int(n_runs) != n_runs or n_runs < 1:
        raise InputError(MSG_OPTION.format(name="n_runs", rule="must be an integer >= 1", value=n_runs))
    totals = np.asarray(sizes)
    per_run = totals if shared_images else totals / n_runs
    design = PlanDesign(np.tile(per_run, (int(n_runs), 1)), shared_images)
    keypoints = list(keypoints) if keypoints is not None else list(range(1, len(values) + 1))
    if len(keypoints) != len(values):
        raise InputError(MSG_OPTION.format(name="keypoints", rule=f"needs one label per SDR ({len(values)})",
                                           value=keypoints))
    return _plan({attribute: (keypoints, values)}, {attribute: design}, power=power, alpha=alpha,
                 correction=correction, n_tests=int(n_tests or len(values)), target_dp=target_dp, n_sim=n_sim,
                 seed=seed, group_names={attribute: names}, permutations=permutations)


def min_detectable_dp_for_audit(document: Mapping, *, power: float = 0.8, n_sim: int = 1000,
                                seed: int = 0) -> pd.DataFrame:
    """The smallest gap the audit could have detected, per (attribute, keypoint).

    For reports: a keypoint that is not significant reads "no gap above
    ``min_detectable_dp`` could be seen".

    Returns
    -------
    pandas.DataFrame
        ``attribute, keypoint, min_detectable_dp, power, alpha, correction,
        pair, observed_dp, significant``.
    """
    plan = plan_from_audit(document, power=power, target_dp=None, n_sim=n_sim, seed=seed)
    return plan.table[["attribute", "keypoint", "min_detectable_dp", "power", "alpha", "correction", "pair",
                       "observed_dp", "significant"]].copy()


def detectable_curve(plan: PlanResult, n_per_group: Sequence[float] | None = None, *,
                     n_sim: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Minimal detectable DP against images per group (equal groups), for the plan's figure.

    For each attribute, at the smallest, median and largest keypoint SDR of the
    plan (the curves bracket all keypoints).

    Returns
    -------
    pandas.DataFrame
        ``attribute, which (min/median/max SDR), sdr, n_per_group, min_detectable_dp``.
    """
    grid = np.asarray(n_per_group if n_per_group is not None else
                      np.unique(np.round(np.geomspace(20, 2000, 13))), dtype=float)
    s = plan.settings
    rows = []
    for attribute, design in plan.designs.items():
        sdr = plan.table.loc[plan.table["attribute"] == attribute, "sdr"].to_numpy(dtype=float)
        sdr = sdr[np.isfinite(sdr)]
        if not len(sdr):
            continue
        marks = {"lowest SDR": float(np.min(sdr)), "median SDR": float(np.median(sdr)),
                 "highest SDR": float(np.max(sdr))}
        for n in grid:
            eq = PlanDesign.equal(max(n, 2.0 * (1 if design.shared_images else design.n_runs)),
                                  design.sizes.shape[1], design.n_runs, design.shared_images)
            mdd = detectable_dp(np.array(list(marks.values())), eq, power=s["power"], alpha=s["alpha"],
                                n_tests=s["n_tests"], correction=s["correction"], n_sim=n_sim, seed=seed,
                                method="normal")
            for (which, value), d in zip(marks.items(), mdd):
                rows.append({"attribute": attribute, "which": which, "sdr": value, "n_per_group": int(n),
                             "min_detectable_dp": float(d)})
    return pd.DataFrame(rows)
