"""The metrics kernel, group coding and keypoint families, against plain loops."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fairlandmark import InputError
from fairlandmark.inputs.families import family_index, parse_family
from fairlandmark.inputs.groups import encode_groups, parse_bin
from fairlandmark.stats.kernel import (
    RunKernel,
    aggregate,
    build_values,
    label_sums,
    mre_from_sums,
    parity_gap,
    sdr_from_sums,
)


def test_build_values_inclusive_thresholds_and_missing():
    errors = np.array([[1.0, 2.0], [np.nan, 2.5]])
    values, layout = build_values(errors, [2.0, 2.5])
    assert layout.n_columns == values.shape[1] == 2 * 4
    assert values[:, layout.present].tolist() == [[1, 1], [0, 1]]
    assert values[:, layout.error].tolist() == [[1.0, 2.0], [0.0, 2.5]]
    assert values[:, layout.hits(0)].tolist() == [[1, 1], [0, 0]]  # 2.0 <= 2.0 is a hit; NaN never is
    assert values[:, layout.hits(1)].tolist() == [[1, 1], [0, 1]]


def _loop_sums(values, row_run, labels, weights, n_runs, n_labels):
    out = np.zeros((n_runs, n_labels, values.shape[1]))
    cnt = np.zeros((n_runs, n_labels))
    for n in range(len(values)):
        out[row_run[n], labels[n]] += weights[n] * values[n]
        cnt[row_run[n], labels[n]] += weights[n]
    return out, cnt


def test_run_kernel_sums_equal_loops_for_batches_and_weights():
    rng = np.random.default_rng(0)
    n, k, n_runs, n_labels, batch = 60, 3, 3, 4, 5
    errors = rng.gamma(2.0, 1.0, size=(n, k))
    errors[rng.random((n, k)) < 0.1] = np.nan
    values, _ = build_values(errors, [2.0])
    row_run = rng.integers(0, n_runs, n)
    kernel = RunKernel(values, row_run, n_runs)
    labels = rng.integers(0, n_labels, size=(batch, n))
    weights = rng.integers(0, 3, size=(batch, n)).astype(float)
    sums, counts = kernel.sums(kernel.labels_by_run(labels), n_labels, kernel.labels_by_run(weights))
    assert sums.shape == (batch, n_runs, n_labels, values.shape[1])
    for b in range(batch):
        exp_sums, exp_counts = _loop_sums(values, row_run, labels[b], weights[b], n_runs, n_labels)
        np.testing.assert_allclose(sums[b], exp_sums, rtol=1e-12)
        np.testing.assert_array_equal(counts[b], exp_counts)
    one, one_counts = kernel.sums(kernel.labels_by_run(labels[2]), n_labels)
    exp_sums, exp_counts = _loop_sums(values, row_run, labels[2], np.ones(n), n_runs, n_labels)
    np.testing.assert_allclose(one[0], exp_sums, rtol=1e-12)
    np.testing.assert_array_equal(one_counts[0], exp_counts)


@pytest.mark.parametrize("grouped", [True, False])
@pytest.mark.parametrize("with_labelled", [False, True])
def test_label_sums_in_blocks_are_the_kernel_sums(grouped, with_labelled):
    rng = np.random.default_rng(3)
    n, k, n_runs, n_labels = 203, 4, 3, 5
    errors = rng.gamma(2.0, 1.0, size=(n, k))
    errors[rng.random((n, k)) < 0.1] = np.nan
    labelled = None
    if with_labelled:
        labelled = rng.random((n, k)) > 0.2
        labelled[:40] = True  # whole blocks labelled in a study that is not
        errors[~labelled] = np.nan
    row_run = np.sort(rng.integers(0, n_runs, n)) if grouped else rng.integers(0, n_runs, n)
    labels = rng.integers(0, n_labels, n)
    values, layout = build_values(errors, [1.0, 2.5], labelled=labelled)
    kernel = RunKernel(values, row_run, n_runs)
    want, want_counts = kernel.sums(kernel.labels_by_run(labels), n_labels)
    # One block per run: the kernel's own product, bit for bit.
    sums, counts, got_layout = label_sums(errors, [1.0, 2.5], row_run, n_runs, labels, n_labels, labelled=labelled)
    assert got_layout == layout
    np.testing.assert_array_equal(sums, want)
    np.testing.assert_array_equal(counts, want_counts)
    # Blocks of 16 rows: counts exact, error sums to rounding, and both equal plain loops.
    sums, counts, _ = label_sums(errors, [1.0, 2.5], row_run, n_runs, labels, n_labels, labelled=labelled,
                                 block_rows=16)
    exact = np.ones(layout.n_columns, bool)
    exact[layout.error] = False
    np.testing.assert_array_equal(sums[..., exact], want[..., exact])
    np.testing.assert_allclose(sums, want, rtol=1e-13)
    np.testing.assert_array_equal(counts, want_counts)
    loop, loop_counts = _loop_sums(values, row_run, labels, np.ones(n), n_runs, n_labels)
    np.testing.assert_allclose(sums[0], loop, rtol=1e-13)
    np.testing.assert_array_equal(counts[0], loop_counts)


def test_aggregate_sdr_mre_from_sums():
    # Two cells per group: group 0 = cells {0, 2}, group 1 = cells {1, 3}.
    errors = np.array([[1.0], [3.0], [2.0], [np.nan], [0.5]])
    cells = np.array([0, 1, 2, 3, 0])
    values, layout = build_values(errors, [2.0])
    kernel = RunKernel(values, np.zeros(5, dtype=int), 1)
    sums, counts = kernel.sums(kernel.labels_by_run(cells), 4)
    matrix = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=float)
    gsums, gcounts = aggregate(sums[0], counts[0], matrix)
    assert gcounts.tolist() == [[3, 2]]
    assert sdr_from_sums(gsums, gcounts, layout)[0, :, 0].tolist() == [1.0, 0.0]
    np.testing.assert_allclose(mre_from_sums(gsums, layout)[0, :, 0], [3.5 / 3, 3.0], rtol=1e-15)


def test_parity_gap_is_max_pairwise_gap_with_distinct_pair():
    values = np.array([[0.2, 0.5], [0.9, 0.5], [0.4, 0.5], [0.0, np.nan]])  # (G=4, K=2)
    valid = np.array([True, True, True, False])  # group 3 is too small
    gap, high, low = parity_gap(values, valid)
    assert gap[0] == pytest.approx(0.7) and (high[0], low[0]) == (1, 0)  # group 3's 0.0 is ignored
    assert gap[1] == 0.0 and high[1] != low[1]  # a tie still names two groups
    gap, _, _ = parity_gap(values, np.array([True, False, False, False]))
    assert np.isnan(gap).all()  # fewer than two valid groups
    rng = np.random.default_rng(3)
    many = rng.random((6, 5, 7))  # (batch, G, K)
    ok = rng.random((6, 5)) < 0.7
    gap, high, low = parity_gap(many, ok)
    for b in range(6):
        for k in range(7):
            vals = [many[b, g, k] for g in range(5) if ok[b, g]]
            pairs = [abs(x - y) for i, x in enumerate(vals) for y in vals[i + 1:]]
            if pairs:
                assert gap[b, k] == max(pairs)
                assert many[b, high[b, k], k] - many[b, low[b, k], k] == gap[b, k]
            else:
                assert np.isnan(gap[b, k])


def test_encode_groups_bins_intersection_and_errors():
    meta = pd.DataFrame({"sex": ["F", "M", "F", "M", "F"], "age": [9, 13.9, 14, 18, 30]},
                        index=pd.Index(["a", "b", "c", "d", "e"], name="image_id"))
    rows = np.array(["a", "b", "c", "d", "e", "a"])  # image a in two runs
    coding = encode_groups(meta, rows, attributes=["sex", "age"], bins={"age": [14, 18]})
    assert coding.groups["age"] == ["age<14", "14<=age<18", "age>=18"]
    assert coding.row_codes("age").tolist() == [0, 0, 1, 2, 2, 0]
    assert coding.attributes == ["sex", "age", "sex&age"]
    names = coding.groups["sex&age"]
    assert [names[c] for c in coding.row_codes("sex&age")] == [
        "F&age<14", "M&age<14", "F&14<=age<18", "M&age>=18", "F&age>=18", "F&age<14"]
    # Aggregation matrix maps each cell to the group it belongs to.
    for a in coding.attributes:
        agg = coding.aggregation(a)
        assert (agg.sum(axis=1) == 1).all()
        np.testing.assert_array_equal(agg[coding.cell].argmax(axis=1), coding.row_codes(a))
    assert parse_bin("age=14") == ("age", [14.0])
    with pytest.raises(InputError, match="attribute 'sex' has a single group \\('F'\\)"):
        encode_groups(meta, np.array(["a", "c"]), attributes=["sex"])
    with pytest.raises(InputError, match="expected COLUMN=CUT"):
        parse_bin("age")
    with pytest.raises(InputError, match="bins age: no such attribute"):
        encode_groups(meta, rows, attributes=["sex"], bins={"age": [14]})
    bad = meta.assign(age=["9", "x", "14", "18", "30"])
    with pytest.raises(InputError, match="image 'b', column 'age': 'x' is not a number"):
        encode_groups(bad, rows, attributes=["age"], bins={"age": [14]})


def test_groups_sorted_naturally():
    meta = pd.DataFrame({"site": ["s10", "s2", "s1"]}, index=pd.Index(["a", "b", "c"]))
    coding = encode_groups(meta, np.array(["a", "b", "c"]), attributes=["site"])
    assert coding.groups["site"] == ["s1", "s2", "s10"]


def test_families():
    assert parse_family("wrist=1-3,7") == ("wrist", ["1", "2", "3", "7"])
    assert family_index([("w", ["1", "2"]), ("f", ["3"])], [1, 2, 3]) == {"w": [0, 1], "f": [2]}
    with pytest.raises(InputError, match="keypoint '2' is in both 'w' and 'f'"):
        family_index([("w", ["1", "2"]), ("f", ["2"])], [1, 2, 3])
    with pytest.raises(InputError, match="keypoint '9' is not in the predictions"):
        family_index([("w", ["9"])], [1, 2, 3])
    with pytest.raises(InputError, match="'all' is reserved"):
        parse_family("all=1-3")
    with pytest.raises(InputError, match="expected NAME=SPEC"):
        parse_family("wrist=3-1")


def test_family_name_given_twice_is_an_error():
    with pytest.raises(InputError, match="families a: given twice"):
        family_index([("a", ["1"]), ("a", ["2"])], [1, 2])
