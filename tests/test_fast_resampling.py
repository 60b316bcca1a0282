"""The fast paths of the bootstrap and the randomized baseline give the numbers of the general paths, bit for bit.

The bootstrap's fast path (no missing prediction or unlabelled point, every group in DP in every run) and the
baseline's (every point labelled) work per run without the (resamples, runs, cells, columns) sums. Each study
here runs through both paths (the general one forced by turning the plans off) and every array the two
resampling loops return must be equal (``np.array_equal``, not close). Where the common case does not hold the
plan must decline. The draws themselves are checked against the formulas they had before (float64
multiplicities, ``np.floor``, ``%`` on int64 labels).
"""

from __future__ import annotations

import numpy as np
import pytest

from fairlandmark import audit_arrays
from fairlandmark.stats import significance as significance_module
from fairlandmark.stats import workers as workers_module
from fairlandmark.stats.significance import SignificanceOptions


def _study(seed=0, n=150, k=4, runs=3, shared=False, three_levels=True, age=False):
    rng = np.random.default_rng(seed)
    true = rng.uniform(0, 100, size=(n, k, 2))
    groups = {"sex": rng.choice(["F", "M"], n)}
    if three_levels:
        groups["site"] = rng.choice(["A", "B", "C"], n)
    if age:
        groups["age"] = rng.choice(["young", "old"], n)
    ids = np.arange(n)
    row_run = np.arange(n) % runs
    if shared:  # the same n // runs images in every run, listed in another order in each
        per_run = n // runs
        ids = np.concatenate([rng.permutation(per_run) for _ in range(runs)])
        row_run = np.repeat(np.arange(runs), per_run)
        true = true[ids]
        groups = {key: value[ids] for key, value in groups.items()}
    pred = true + rng.normal(0, 1.3, size=true.shape)
    return pred, true, groups, row_run, ids.astype(str)


def _resample(study, *, fast, min_group_size=3, **options):
    """What ``_bootstrap`` and ``_baseline`` return (None when off), and whether their fast plans applied."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        return _resample_patched(monkeypatch, study, fast=fast, min_group_size=min_group_size, **options)


def _resample_patched(monkeypatch, study, *, fast, min_group_size, **options):
    seen, plans = {}, {}
    for name in ("_bootstrap", "_baseline"):
        original = getattr(significance_module, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            seen[_name] = _original(*args, **kwargs)
            return seen[_name]

        monkeypatch.setattr(significance_module, name, spy)
    for name in ("_fast_bootstrap_plan", "_fast_baseline_plan"):
        original = getattr(significance_module, name)

        def plan(ctx, _original=original, _name=name):
            seen["strata"] = ctx.strata.n_strata
            made = _original(ctx) if fast else None
            plans[_name] = made is not None
            return made

        monkeypatch.setattr(significance_module, name, plan)
    pred, true, groups, runs, ids = study
    sig = SignificanceOptions(**{"permutations": 0, "bootstrap": 60, "baseline_repeats": 40, "seed": 3,
                                 "batch_size": 25, "n_jobs": 1, **options})
    audit_arrays(pred, true, groups, runs=runs, image_ids=ids, spacing_mm=1.0, min_group_size=min_group_size,
                 significance=sig, curves=False)
    return seen.get("_bootstrap"), seen.get("_baseline"), plans, seen["strata"]


def _assert_identical(fast, general):
    fast_boot, general_boot = fast[0] or {}, general[0] or {}  # None when the bootstrap is off
    assert fast_boot.keys() == general_boot.keys()
    for attribute in fast_boot:
        for name in ("dp", "sdr", "mre"):
            assert np.array_equal(fast_boot[attribute][name], general_boot[attribute][name], equal_nan=True), \
                (attribute, name)
    assert fast[1].keys() == general[1].keys()
    for attribute in fast[1]:
        assert np.array_equal(fast[1][attribute], general[1][attribute], equal_nan=True), attribute


def _both(study, **options):
    fast = _resample(study, fast=True, **options)
    general = _resample(study, fast=False, **options)
    _assert_identical(fast, general)
    return fast


@pytest.mark.parametrize("three_levels", [False, True])
def test_two_and_three_groups_and_their_intersection_bit_for_bit(three_levels):
    boot, base, plans, _ = _both(_study(seed=1, three_levels=three_levels))
    assert plans == {"_fast_bootstrap_plan": True, "_fast_baseline_plan": True}
    expected = {"sex", "site", "sex&site"} if three_levels else {"sex"}
    assert set(boot) == expected and set(base) == expected
    assert np.isfinite(boot["sex"]["dp"]).all() and np.isfinite(base["sex"]).all()  # numbers, not NaN == NaN


def test_three_attributes_groups_of_many_cells_bit_for_bit():
    # Each sex group adds up six cells of the intersection (sex x site x age).
    boot, _, plans, _ = _both(_study(seed=11, n=360, age=True), min_group_size=2)
    assert all(plans.values()) and set(boot) == {"sex", "site", "age", "sex&site&age"}


def test_runs_sharing_images_bit_for_bit():
    boot, _, plans, strata = _both(_study(seed=2, n=180, shared=True))
    assert all(plans.values())
    assert strata == 1  # one stratum: every run's multiplicities come from the same draw of the images
    assert boot["sex"]["dp"].shape == (60, 4)


def test_worker_threads_give_the_numbers_of_one_thread(monkeypatch):
    study = _study(seed=3, n=240, runs=4)
    one = _resample(study, fast=True, batch_size=7)
    monkeypatch.setattr(workers_module, "MIN_THREADED_WORK", 0)
    threads = _resample(study, fast=True, n_jobs=2, batch_size=7)
    assert all(threads[2].values())
    _assert_identical(threads, one)
    _assert_identical(threads, _resample(study, fast=False, n_jobs=2, batch_size=7))


def test_the_batch_size_moves_at_most_the_last_float32_bits_of_the_mre():
    """Hit counts are whole numbers, exact in float32 in any order: DP, SDR and the baseline are the same for any
    batch size. The error sums are float32 products whose rounding can depend on the product's shape: with
    OpenBLAS 0.3.31 on an AMD EPYC a batch of 7 instead of 25 moved 68 of these 480 bootstrap MREs by up to
    6e-8 mm (on an Intel Xeon none moved)."""
    study = _study(seed=3, n=240, runs=4)
    wide, narrow = _resample(study, fast=True), _resample(study, fast=True, batch_size=7)
    for attribute in wide[0]:
        for name in ("dp", "sdr"):
            assert np.array_equal(wide[0][attribute][name], narrow[0][attribute][name], equal_nan=True), name
        np.testing.assert_allclose(narrow[0][attribute]["mre"], wide[0][attribute]["mre"], rtol=1e-6, atol=0)
        assert np.array_equal(wide[1][attribute], narrow[1][attribute], equal_nan=True)


def test_missing_predictions_leave_the_bootstrap_on_the_general_path():
    pred, true, groups, runs, ids = _study(seed=4)
    pred[5, 1] = np.nan
    _, _, plans, _ = _both((pred, true, groups, runs, ids))
    # The baseline uses only hits and image counts: missing predictions are misses, still its common case.
    assert plans == {"_fast_bootstrap_plan": False, "_fast_baseline_plan": True}


def test_unlabelled_points_leave_both_on_the_general_path():
    pred, true, groups, runs, ids = _study(seed=5)
    true[7, 2] = np.nan  # no ground truth: SDR denominators differ per keypoint
    _, _, plans, _ = _both((pred, true, groups, runs, ids))
    assert plans == {"_fast_bootstrap_plan": False, "_fast_baseline_plan": False}


def test_a_group_too_small_in_one_run():
    pred, true, groups, runs, ids = _study(seed=6, n=150, three_levels=False)
    # Run 2 keeps only two images of sex "F": that group is out of run 2's DP (min_group_size 3).
    in_run2_f = np.flatnonzero((runs == 2) & (groups["sex"] == "F"))
    groups["sex"][in_run2_f[2:]] = "M"
    _, base, plans, _ = _both((pred, true, groups, runs, ids))
    assert plans == {"_fast_bootstrap_plan": False, "_fast_baseline_plan": True}
    assert np.isfinite(base["sex"]).all()  # the DP of runs 0 and 1 still counts


def test_randomized_groups_falling_below_the_minimum(monkeypatch):
    # Runs of 9 images, 3 per site: a randomized site is often smaller than 3 and leaves a run's DP.
    n, runs = 36, 4
    rng = np.random.default_rng(7)
    true = rng.uniform(0, 100, size=(n, 3, 2))
    pred = true + rng.normal(0, 1.3, size=(n, 3, 2))
    run = np.arange(n) % runs
    site = np.array(["A", "B", "C"])[(np.arange(n) // runs) % 3]
    sex = np.array(["F", "M"])[(np.arange(n) // runs) % 2]
    masked = []
    original = significance_module.parity_gap_value

    def spy(values, valid):
        masked.append(not np.all(valid))
        return original(values, valid)

    monkeypatch.setattr(significance_module, "parity_gap_value", spy)
    study = (pred, true, {"sex": sex, "site": site}, run, np.arange(n).astype(str))
    fast = _resample(study, fast=True, baseline_repeats=200, batch_size=64)
    assert fast[2]["_fast_baseline_plan"] and any(masked)
    _assert_identical(fast, _resample(study, fast=False, baseline_repeats=200, batch_size=64))


def test_many_cells_use_wide_labels_and_agree():
    # 12 x 12 base levels: 144 cells of the full space, more than an int8 label holds.
    n = 600
    rng = np.random.default_rng(8)
    true = rng.uniform(0, 100, size=(n, 2, 2))
    pred = true + rng.normal(0, 1.3, size=(n, 2, 2))
    groups = {"a": np.arange(n) % 12, "b": (np.arange(n) // 12) % 12}
    study = (pred, true, {k: v.astype(str) for k, v in groups.items()}, np.zeros(n, int), np.arange(n).astype(str))
    _, base, plans, _ = _both(study, bootstrap=0, min_group_size=1)
    assert plans["_fast_baseline_plan"] and base["a"].shape == (40, 2)


def _before_bootstrap_weights(image_cells, strata, seed, n_cells, batches):
    """The multiplicities as the bootstrap drew them before: float64, ``np.floor``, one stream per stratum."""
    rngs = significance_module._streams(seed, 2, strata.n_strata)
    out = []
    for n in batches:
        weights = np.empty((n, strata.n_images))
        for s, rng in enumerate(rngs):
            cells = image_cells[strata.stratum(s)]
            order = np.argsort(cells, kind="stable")
            sizes = np.bincount(cells, minlength=n_cells)
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            m = len(order)
            pick = starts[cells[order]] + np.floor(rng.random((n, m)) * sizes[cells[order]]).astype(np.int64)
            flat = np.bincount((np.arange(n)[:, None] * m + order[pick]).ravel(), minlength=n * m)
            weights[:, strata.stratum(s)] = flat.reshape(n, m)
        out.append(weights)
    return out


def _record_draws(monkeypatch, name, position, study, **options):
    """Run an audit of ``study`` and return the context and the per-run arrays (argument ``position``) that
    each call of ``significance._<name>`` received."""
    seen = []
    original = getattr(significance_module, name)

    def spy(ctx, *args):
        seen.append((ctx, [np.array(x, copy=True) for x in args[position - 1]]))
        return original(ctx, *args)

    monkeypatch.setattr(significance_module, name, spy)
    pred, true, groups, runs, ids = study
    audit_arrays(pred, true, groups, runs=runs, image_ids=ids, spacing_mm=1.0, min_group_size=3, curves=False,
                 significance=SignificanceOptions(**{"permutations": 0, "bootstrap": 0, "baseline_repeats": 0,
                                                     "n_jobs": 1, **options}))
    return seen[0][0], [arrays for _, arrays in seen]


def test_bootstrap_draws_the_multiplicities_it_drew_before(monkeypatch):
    ctx, drawn = _record_draws(monkeypatch, "_fast_bootstrap", 2, _study(seed=9, n=120, shared=True), bootstrap=30,
                               seed=4, batch_size=12)
    before = _before_bootstrap_weights(ctx.image_cells, ctx.strata, 4, ctx.coding.n_cells, [12, 12, 6])
    assert len(drawn) == 3
    for now, then in zip(drawn, before):
        for r, weights in enumerate(now):
            assert weights.dtype == np.float32
            assert np.array_equal(weights, then[:, ctx.strata.rows_by_run[r]])


def test_baseline_draws_the_labels_it_drew_before(monkeypatch):
    ctx, drawn = _record_draws(monkeypatch, "_fast_baseline", 3, _study(seed=10, n=90), baseline_repeats=20, seed=5,
                               batch_size=8)
    coding, strata = ctx.coding, ctx.strata
    base = [a for a in coding.attributes if a in coding.base_codes]
    sizes = [len(coding.groups[a]) for a in base]
    codes = {a: strata.image_values(ctx.kernel.labels_by_run(coding.base_codes[a])).astype(np.int64) for a in base}
    flips = {a: significance_module._streams(5, 3 + 1000 * (i + 1), strata.n_strata) for i, a in enumerate(base)}
    levels = {a: significance_module._streams(5, 4 + 1000 * (i + 1), strata.n_strata) for i, a in enumerate(base)}
    assert sizes == [2, 3] and len(drawn) == 3
    for now, n in zip(drawn, [8, 8, 4]):
        labels = np.zeros((n, strata.n_images), dtype=np.int64)
        for s in range(strata.n_strata):
            full = 0
            for a, size in zip(base, sizes):
                code = codes[a][strata.stratum(s)]
                flip = flips[a][s].random((n, len(code))) < 0.5
                shift = (levels[a][s].integers(1, size, size=(n, len(code))) if size > 2
                         else np.ones((n, len(code)), int))
                full = full * size + np.where(flip, (code + shift) % size, code)
            labels[:, strata.stratum(s)] = full
        for r, run_labels in enumerate(now):
            assert np.array_equal(run_labels, labels[:, strata.rows_by_run[r]])


def test_one_keypoint_and_ten_runs():
    # numpy sums a contiguous run axis pairwise (one keypoint, 8 runs or more): the fast paths average the
    # per-run values with the general path's own mean, not one run at a time.
    _both(_study(seed=1, n=400, k=1, runs=10))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("with_labelled", [False, True])
def test_values_written_into_a_used_buffer_are_the_concatenated_blocks(dtype, with_labelled):
    from fairlandmark.stats.kernel import build_values

    rng = np.random.default_rng(9)
    errors = rng.gamma(2.0, 1.0, (50, 4))
    errors[rng.random((50, 4)) < 0.2] = np.nan
    errors[0, 0], errors[1, 1] = 2.0, -0.0  # at the threshold: a hit; a negative zero kept as it is
    labelled = rng.random((50, 4)) > 0.1 if with_labelled else None
    present = ~np.isnan(errors)
    blocks = [present, np.where(present, errors, 0.0)] + [present & (errors <= t) for t in (2.0, 4.0)]
    blocks += [labelled] if with_labelled else []
    expected = np.concatenate(blocks, axis=1).astype(dtype)
    buffer = np.full((60, expected.shape[1]), 7.0, dtype=dtype)  # stale values from an earlier block
    values, layout = build_values(errors, [2.0, 4.0], labelled=labelled, dtype=dtype, out=buffer[:50])
    np.testing.assert_array_equal(values, expected)
    assert np.shares_memory(values, buffer)
    np.testing.assert_array_equal(build_values(errors, [2.0, 4.0], labelled=labelled, dtype=dtype)[0], expected)
    assert layout.n_columns == expected.shape[1]
    assert np.signbit(values[1, layout.error][1])
    with pytest.raises(ValueError, match="out must be"):
        build_values(errors, [2.0, 4.0], labelled=labelled, dtype=dtype, out=buffer)  # 60 rows for 50
