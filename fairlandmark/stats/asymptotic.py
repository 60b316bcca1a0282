"""Large-sample (normal-theory) null distribution of the per-cell sums under label permutation.

Why. A permutation test over a million images repeated 10,000 times is 10**10
label draws. Its null distribution is known in closed form for large groups:
permuting labels within a run is sampling the cells' rows without replacement,
so by the finite-population central limit theorem (Hajek) the vector of
per-cell column sums ``S[c, m] = sum of V[n, m] over the rows n of cell c`` is
asymptotically normal with

    E S[c, :]          = n_c * mean(V)
    Cov(S[c, m], S[d, m']) = (n_c * [c == d] - n_c * n_d / N) * C[m, m']

where ``C`` is the covariance of the value columns (hit indicators, errors,
presence) over the run's N rows, divisor ``N - 1`` (these are the exact
permutation moments, not only their limit). Every audited statistic -- SDR and
MRE of any group, the DP (largest gap between groups, so the max over group
pairs), the MRE gap, for every keypoint and attribute at once -- is a function
of these sums. Drawing the sums from this multivariate normal and pushing them
through the very code that evaluates permutations gives the large-sample null
of every statistic jointly: p-values per test and, from the same joint draws,
the Westfall-Young step-down adjustment (its normal-theory analogue). Runs are
permuted independently, so their sums are drawn independently. (Runs that share
their images are permuted together: :mod:`fairlandmark.stats.significance` then
builds one model per stratum of images over the value rows of all its runs side by
side, so their sums are drawn jointly.)

Cost per draw: O(L * M**2) per run (L cells, M value columns), independent of
the number of images; the one pass over the data is the covariance ``C``.

The covariance factorises as a Kronecker product, ``A (x) C`` with
``A = diag(n) - n n' / N``; with ``G = diag(sqrt n) (I - u u')``, ``u =
sqrt(n / N)``, ``G G' = A``, and with ``F F' = C`` (eigen-decomposition),
``S = n mu' + G E F'`` for ``E`` of independent standard normals has exactly
that mean and covariance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["NormalSums", "normal_sums_model"]


@dataclass(frozen=True)
class NormalSums:
    """Normal model of one run's per-cell sums under label permutation.

    Attributes
    ----------
    mean : ndarray, shape (L, M)
        ``n_c * mean(V)``.
    cell_factor : ndarray, shape (L, L)
        ``G`` with ``G G' = diag(n) - n n' / N``.
    column_factor : ndarray, shape (M, M)
        ``F`` with ``F F' = C``, the covariance of the value columns.
    """

    mean: np.ndarray
    cell_factor: np.ndarray
    column_factor: np.ndarray

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` draws of the sums, shape (n, L, M), float64.

        Examples
        --------
        >>> model = normal_sums_model(np.array([[0.0], [1.0], [0.0], [1.0]]), np.array([0, 0, 1, 1]), 2)
        >>> model.draw(np.random.default_rng(0), 3).shape
        (3, 2, 1)
        """
        L, M = self.mean.shape
        noise = rng.standard_normal((n, L, M))
        return self.mean + np.matmul(np.matmul(self.cell_factor, noise), self.column_factor.T)


def normal_sums_model(values: np.ndarray, cells: np.ndarray, n_cells: int) -> NormalSums:
    """Permutation mean and covariance of per-cell sums for one run.

    Parameters
    ----------
    values : ndarray, shape (N, M)
        Value matrix of the run (see :mod:`fairlandmark.stats.kernel`).
    cells : ndarray of int, shape (N,)
        Cell of each row.
    n_cells : int

    Returns
    -------
    NormalSums

    Examples
    --------
    Two cells of two rows each and one 0/1 column: the permutation variance of a
    cell's sum is ``n_c (N - n_c) / N * var = 2 * 2 / 4 * 1/3``:

    >>> model = normal_sums_model(np.array([[0.0], [1.0], [0.0], [1.0]]), np.array([0, 0, 1, 1]), 2)
    >>> cov = model.cell_factor @ model.cell_factor.T * (model.column_factor @ model.column_factor.T)[0, 0]
    >>> np.round(cov, 6).tolist()
    [[0.333333, -0.333333], [-0.333333, 0.333333]]
    """
    values = np.asarray(values)
    n_rows, n_cols = values.shape
    counts = np.bincount(np.asarray(cells), minlength=n_cells).astype(np.float64)
    if n_rows < 2:
        return NormalSums(np.zeros((n_cells, n_cols)), np.zeros((n_cells, n_cells)), np.zeros((n_cols, n_cols)))
    # Mean and covariance in float64 in blocks of rows: exact enough and no (N, M) float64 copy; blocks of at
    # most 2**18 rows and about 256 MB (the error-curve test has hundreds of columns).
    rows = min(1 << 18, max(1024, (1 << 25) // max(n_cols, 1)))
    total = np.zeros(n_cols)
    for start in range(0, n_rows, rows):
        total += values[start:start + rows].sum(axis=0, dtype=np.float64)
    mu = total / n_rows
    scatter = np.zeros((n_cols, n_cols))
    for start in range(0, n_rows, rows):
        block = values[start:start + rows].astype(np.float64) - mu
        scatter += block.T @ block
    cov = scatter / (n_rows - 1)
    eigval, eigvec = np.linalg.eigh(cov)
    column_factor = eigvec * np.sqrt(np.clip(eigval, 0.0, None))
    u = np.sqrt(counts / n_rows)
    cell_factor = np.sqrt(counts)[:, None] * (np.eye(n_cells) - np.outer(u, u))
    return NormalSums(mean=counts[:, None] * mu, cell_factor=cell_factor, column_factor=column_factor)
