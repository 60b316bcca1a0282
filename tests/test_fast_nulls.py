"""The fast paths of the permutation nulls give the numbers of the general paths.

The common case (no missing prediction, every group in DP in every run) skips the general
(permutations, runs, cells, columns) arrays; the permutations are drawn once and shared with the curve
test; the resampling loops run on one BLAS thread per worker. None of this may change a reported number:
each is compared with the general path on the same data by the whole JSON document. The null
distributions agree bit for bit for DP and MRE gaps; the curve-gap null multiplies exact numerators by one
reciprocal per attribute and run where the general path divides, so it agrees to about 1e-16 (far inside
the tie tolerance of the p-values).
"""

from __future__ import annotations

import sys
from fractions import Fraction

import numpy as np
import pytest

from fairlandmark import audit_arrays
from fairlandmark.stats import curves as curves_module
from fairlandmark.stats import significance as significance_module
from fairlandmark.stats.kernel import PackedCellCounts
from fairlandmark.stats.significance import SignificanceOptions, draw_permutations, image_strata, permutation_batches


def _study(seed=0, n=120, k=4, runs=3, shared=False):
    rng = np.random.default_rng(seed)
    true = rng.uniform(0, 100, size=(n, k, 2))
    pred = true + rng.normal(0, 1.3, size=(n, k, 2))
    groups = {"sex": rng.choice(["F", "M"], n), "site": np.resize(["A", "B", "C"], n)}
    if shared:  # the same n // runs images in every run
        per_run = n // runs
        ids = np.tile(np.arange(per_run), runs).astype(str)
        for key in groups:
            groups[key] = np.tile(groups[key][:per_run], runs)
        return pred, true, groups, np.repeat(np.arange(runs), per_run), ids
    return pred, true, groups, np.arange(n) % runs, np.arange(n).astype(str)


def _nulls(monkeypatch, study, **options):
    """The whole JSON and every null distribution handed to ``permutation_pvalue`` (DP, MRE gap, curve gap)."""
    seen = []
    original = significance_module.permutation_pvalue

    def spy(null, observed):
        # Keyed by the caller: the curve test may run on its own thread, alongside the DP test.
        seen.append((sys._getframe(1).f_code.co_name == "_curve_test", np.array(null, copy=True)))
        return original(null, observed)

    monkeypatch.setattr(significance_module, "permutation_pvalue", spy)
    doc = _audit(study, **options).to_json()
    monkeypatch.setattr(significance_module, "permutation_pvalue", original)
    assert len(seen) == 3  # DP, MRE gap, curve gap
    assert sum(is_curve for is_curve, _ in seen) == 1  # told apart by the caller's name: a rename fails here
    return doc, [null for _, null in sorted(seen, key=lambda item: item[0])]  # stable: DP, MRE gap, then curve


def _general(monkeypatch):
    monkeypatch.setattr(significance_module, "_fast_null_plan", lambda ctx: None)
    monkeypatch.setattr(curves_module, "_fast_case", lambda *args: False)
    monkeypatch.setattr(significance_module, "SHARED_PERMUTATION_BYTES", 0)  # each test draws its own


def _assert_same(a, b):
    assert a[0] == b[0]  # the whole JSON document
    for i, (x, y) in enumerate(zip(a[1], b[1])):
        if i < 2:  # DP and MRE gap
            np.testing.assert_array_equal(x, y)  # bit for bit
        else:  # curve gap
            np.testing.assert_allclose(x, y, rtol=1e-13, atol=1e-15)


def _audit(study, **options):
    pred, true, groups, runs, ids = study
    sig = SignificanceOptions(permutations=150, bootstrap=40, baseline_repeats=20, seed=3, **options)
    return audit_arrays(pred, true, groups, runs=runs, image_ids=ids, spacing_mm=1.0, min_group_size=3,
                        significance=sig, curves={"phi": [0.5, 1.0, 2.0, 3.0, 5.0]})


@pytest.mark.parametrize("shared", [False, True])
def test_fast_paths_give_the_numbers_of_the_general_paths(monkeypatch, shared):
    study = _study(seed=1, shared=shared)
    fast = _nulls(monkeypatch, study)
    _general(monkeypatch)
    _assert_same(fast, _nulls(monkeypatch, study))


def test_fast_paths_with_small_batches_and_many_cells(monkeypatch):
    # Three attributes: the intersection has up to 12 cells, marginal groups sum 2-6 cells each.
    pred, true, groups, runs, ids = _study(seed=2, n=240)
    groups["age"] = np.resize(["young", "mid", "old"], len(pred))[::-1].copy()
    study = (pred, true, groups, runs, ids)
    fast = _nulls(monkeypatch, study, batch_size=32)
    _general(monkeypatch)
    _assert_same(fast, _nulls(monkeypatch, study, batch_size=32))


def _form_name(form):
    if isinstance(form, curves_module._TwoGroupGap):
        return f"two groups, {form.offset.dtype}"
    dtype = np.asarray(form.factors).dtype
    return f"spread, {dtype}" if form.inverse != 1.0 else "spread, rounded"


@pytest.mark.parametrize("narrow_limit, int_limit, float_limit, forms", [
    (2**15, 2**31, 2**53, ["spread, int32", "two groups, int16"]),
    (200, 2**31, 2**53, ["spread, int32", "two groups, int32"]),  # int16 counts, n_A * n_B >= 200: int32
    (0, 2**31, 2**53, ["spread, int32", "two groups, int32"]),
    (0, 1000, 2**53, ["spread, int32", "two groups, float64"]),
    (0, 100, 2**53, ["spread, float64", "spread, int32", "two groups, float64"]),
    (0, 0, 2**53, ["spread, float64", "two groups, float64"]),
    (0, 0, 0, ["spread, rounded", "two groups, float64"]),
])
def test_curve_null_gap_forms_agree_with_the_general_path(monkeypatch, narrow_limit, int_limit, float_limit, forms):
    # Larger runs take the wider forms (int32, then float64: exact integers, or rounded SDRs for several
    # groups with a huge least common multiple of sizes); forced here by lowering the limits. With a
    # narrow limit of 200, counts are int16 (runs of 40 rows) but numerators int32 (n_A * n_B is about 400).
    study = _study(seed=1, shared=True)
    monkeypatch.setattr(curves_module, "NARROW_LIMIT", narrow_limit)
    monkeypatch.setattr(curves_module, "EXACT_NUMERATOR_LIMIT", int_limit)
    monkeypatch.setattr(curves_module, "EXACT_FLOAT_LIMIT", float_limit)
    used = []
    original = curves_module._CurvePlan.__init__

    def spy(plan, *args, **kwargs):
        original(plan, *args, **kwargs)
        used.append(sorted({_form_name(form) for per_run in plan.gaps.values() for form in per_run}))

    monkeypatch.setattr(curves_module._CurvePlan, "__init__", spy)
    fast = _nulls(monkeypatch, study)
    assert used == [forms]  # the fast curve null ran, with these forms
    _general(monkeypatch)
    _assert_same(fast, _nulls(monkeypatch, study))


def test_int16_counts_with_wider_numerators_in_larger_runs(monkeypatch):
    # Runs of 600 rows: int16 hit counts, but n_A * n_B (about 300 x 300) passes 2**15, so the two-group
    # numerators are int32, and the spreads of three and six groups multiply int16 counts by wider factors.
    # Those products must come out in the factors' dtype (numpy 1.x keeps int16 and wraps unless told).
    study = _study(seed=4, n=1200, k=3, runs=2)
    seen = []
    original = curves_module._CurvePlan.__init__

    def spy(plan, *args, **kwargs):
        original(plan, *args, **kwargs)
        seen.append(({t.dtype for t in plan.totals},
                     sorted({_form_name(form) for per_run in plan.gaps.values() for form in per_run})))

    monkeypatch.setattr(curves_module._CurvePlan, "__init__", spy)
    fast = _nulls(monkeypatch, study)
    assert seen == [({np.dtype(np.int16)}, ["spread, int32", "two groups, int32"])]
    _general(monkeypatch)
    _assert_same(fast, _nulls(monkeypatch, study))


@pytest.mark.parametrize("n_a, n_b", [(181, 181), (1, 32766), (2, 16383), (100, 327), (150, 150), (7, 9)])
def test_int16_two_group_numerators_wrap_to_the_exact_values(n_a, n_b):
    # Every (h_A, total) a run of these groups can give: the int16 steps wrap modulo 2**16, the numerator
    # |h_A * (n_A + n_B) - total * n_A| (at most n_A * n_B < 2**15) comes out exact. (Runs on this path have
    # fewer than 2**15 rows, so n_A + n_B fits too.)
    assert n_a * n_b < curves_module.NARROW_LIMIT and n_a + n_b < curves_module.NARROW_LIMIT
    h_a, total = np.meshgrid(np.arange(n_a + 1), np.arange(n_a + n_b + 1), indexing="ij")
    possible = (total - h_a >= 0) & (total - h_a <= n_b)
    h_a, total = h_a[possible], total[possible]
    form = curves_module._gap_form([n_a, n_b], total.astype(np.int16))
    assert form.offset.dtype == np.int16
    numerator = np.multiply(h_a.astype(np.int16), form.size_sum)
    numerator -= form.offset
    np.abs(numerator, out=numerator)
    assert numerator.dtype == np.int16
    np.testing.assert_array_equal(numerator, np.abs(h_a * (n_a + n_b) - total * n_a))
    assert numerator.max() == n_a * n_b  # the largest, h_A = total = n_A, is reached


@pytest.mark.parametrize("limit", [2**31, 0])
def test_two_group_gaps_are_exact_whatever_the_form(monkeypatch, limit):
    # Very unequal groups: a float64 form |h (1/n_A + 1/n_B) - total / n_B| would cancel (error ~ 1e-12);
    # the numerators are exact integers in int32 or float64, so the gap is the exact fraction, rounded once.
    monkeypatch.setattr(curves_module, "EXACT_NUMERATOR_LIMIT", limit)
    totals = np.array([1, 20000, 46340], dtype=np.int32)
    hits = np.array([[1, 19999, 46339]], dtype=np.int32)
    form = curves_module._gap_form([46339, 1], totals)
    assert form.offset.dtype == (np.int32 if limit else np.float64)
    numerator = np.abs(np.multiply(hits, form.size_sum) - form.offset)
    gap = np.multiply(numerator, form.inverse)[0]
    exact = [abs(Fraction(int(h), 46339) - Fraction(int(t - h), 1)) for h, t in zip(hits[0], totals)]
    np.testing.assert_allclose(gap, [float(x) for x in exact], rtol=2e-16, atol=0)


def test_one_keypoint_and_ten_runs(monkeypatch):
    # numpy sums a contiguous run axis pairwise (one keypoint, 8 runs or more): the fast DP/MRE-gap null
    # averages the per-run gaps with the general path's own mean, not one run at a time.
    study = _study(seed=1, n=400, k=1, runs=10, shared=True)
    fast = _nulls(monkeypatch, study)
    _general(monkeypatch)
    _assert_same(fast, _nulls(monkeypatch, study))


def test_missing_predictions_take_the_general_path_and_agree(monkeypatch):
    pred, true, groups, runs, ids = _study(seed=4)
    pred[5, 1] = np.nan
    calls = []
    original = significance_module._fast_null_plan
    monkeypatch.setattr(significance_module, "_fast_null_plan", lambda ctx: calls.append(original(ctx)) or calls[-1])
    _audit((pred, true, groups, runs, ids))
    assert calls == [None]  # presence columns: not the common case


def test_drawn_permutations_are_those_yielded_batch_by_batch():
    rng = np.random.default_rng(0)
    cells = [rng.integers(0, 4, 31).astype(np.int8), rng.integers(0, 4, 31).astype(np.int8)]
    strata = image_strata([np.arange(31).astype(str), np.arange(31).astype(str)[::-1]])
    drawn = draw_permutations(cells, 57, seed=9, strata=strata)
    for start, n, labels in permutation_batches(cells, 57, seed=9, batch_size=10, strata=strata):
        np.testing.assert_array_equal(labels[0], drawn[start:start + n][:, strata.rows_by_run[0]])
        np.testing.assert_array_equal(labels[1], drawn[start:start + n][:, strata.rows_by_run[1]])
    again = [x for _, _, x in permutation_batches(cells, 57, seed=9, batch_size=25, strata=strata, drawn=drawn)]
    fresh = [x for _, _, x in permutation_batches(cells, 57, seed=9, batch_size=25, strata=strata)]
    for a, b in zip(again, fresh):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_the_audit_shares_its_permutations_with_the_curve_test():
    result = _audit(_study(seed=5))
    drawn = result.significance.shared_permutations
    assert drawn is not None and drawn.shape == (150, 120)


def test_drawing_in_small_batches_gives_the_same_permutations(monkeypatch):
    rng = np.random.default_rng(1)
    cells = [rng.integers(0, 3, 31).astype(np.int8)]
    whole = draw_permutations(cells, 40, seed=2)
    monkeypatch.setattr(significance_module, "BATCH_BYTES", 12 * 31 * 3)  # 3 permutations per batch
    np.testing.assert_array_equal(draw_permutations(cells, 40, seed=2), whole)


class _FixedKeys:
    """A stand-in random generator whose ``integers`` returns the given keys (to force ties), row after row as
    a stream would (the draws come in blocks of rows)."""

    def __init__(self, keys):
        self.keys = keys
        self.next_row = 0

    def integers(self, low, high, size, dtype):
        rows = size[0]
        assert size[1:] == self.keys.shape[1:] and dtype == self.keys.dtype
        out = self.keys[self.next_row:self.next_row + rows].copy()
        assert len(out) == rows, "more keys asked for than given"
        self.next_row += rows
        return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("m, n_labels, dtype", [(300, 4, np.int8), (7, 2, np.int8), (1000, 100, np.int8),
                                                 (50, 1, np.int8), (2, 3, np.int32), (3000, 6, np.int32),
                                                 (40, 70000, np.int32), (1, 1, np.int8)])
def test_permuted_labels_are_the_argsort_draws(seed, m, n_labels, dtype):
    labels = np.random.default_rng(seed + 10).integers(0, n_labels, m).astype(dtype)
    fast = significance_module.permuted_labels(np.random.default_rng(seed), labels, 257)
    plain = labels[significance_module._random_permutations(np.random.default_rng(seed), 257, m)]
    assert fast.dtype == plain.dtype
    np.testing.assert_array_equal(fast, plain)


def test_permuted_labels_with_tied_keys_are_the_argsort_draws():
    # Rows with exactly equal keys, and keys equal above the label bits: sorted again by the full keys.
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 2**32, size=(400, 300), dtype=np.uint32)
    keys[::3] = rng.integers(0, 50, size=(134, 300)).astype(np.uint32) * np.uint32(2**20)
    keys[1::3, 5] = keys[1::3, 0] ^ np.uint32(1)  # equal above the two label bits, not equal
    labels = rng.integers(0, 4, 300).astype(np.int8)
    fixed = _FixedKeys(keys)
    fast = significance_module.permuted_labels(fixed, labels, 400)
    np.testing.assert_array_equal(fast, labels[np.argsort(keys, axis=1)])
    assert fixed.next_row == 400  # in blocks (of 218 rows of 300 keys), every key used once, in order


@pytest.mark.parametrize("dtype", [np.int32, np.int16])
@pytest.mark.parametrize("n_cells, rows", [(1, 20), (2, 50), (4, 300), (7, 5000), (12, 30000)])
def test_packed_cell_counts_are_the_one_hot_counts(n_cells, rows, dtype):
    # Several packs once the fields pass 24 bits (7 cells of ~700 rows, 12 of ~2500); counts in the totals'
    # dtype (int16 for runs of fewer than 2**15 rows).
    rng = np.random.default_rng(n_cells)
    base = np.arange(rows) % n_cells
    values = (rng.random((rows, 5)) < 0.6).astype(np.float32)
    labels = np.stack([rng.permutation(base) for _ in range(6)]).astype(np.int8)
    counter = PackedCellCounts(np.bincount(base, minlength=n_cells))
    got = counter.counts(labels, values, values.sum(axis=0).astype(dtype))
    for cell in range(n_cells):
        expected = np.stack([values[row == cell].sum(axis=0) for row in labels]).astype(np.int64)
        assert got[cell].dtype == dtype
        np.testing.assert_array_equal(got[cell], expected)
    assert (len(counter.packs) > 1) == (n_cells >= 7)


@pytest.mark.parametrize("seed", range(4))
def test_first_at_least_is_searchsorted(seed):
    # Clusters of rounding-level near-ties, chains of near-ties wider than the band, infinities.
    rng = np.random.default_rng(seed)
    values = np.round(rng.gamma(2, 0.05, (30, 400)), 3)
    values += rng.choice([0.0, 1e-16, -2e-16, 4e-10, 7e-10, 1.5e-9], size=values.shape)
    values[3] = np.cumsum(np.full(400, 3e-10))  # one long chain
    values[5, :7] = -np.inf
    values[6, -3:] = np.inf
    ascending = np.sort(values, axis=1)
    with np.errstate(invalid="ignore"):
        low = ascending - significance_module._TIE_TOLERANCE * np.maximum(1.0, np.abs(ascending))
    expected = np.stack([np.searchsorted(a, b, side="left") for a, b in zip(ascending, low)])
    np.testing.assert_array_equal(significance_module._first_at_least(ascending, low), expected)


@pytest.mark.parametrize("row", [[np.inf], [1.0], [2.0, np.inf], [np.inf, np.inf], [-np.inf, 0.5]])
def test_first_at_least_one_or_two_permutations(row):
    ascending = np.array([row])
    with np.errstate(invalid="ignore"):
        low = ascending - significance_module._TIE_TOLERANCE * np.maximum(1.0, np.abs(ascending))
    expected = np.searchsorted(ascending[0], low[0], side="left")[None, :]
    np.testing.assert_array_equal(significance_module._first_at_least(ascending, low), expected)
