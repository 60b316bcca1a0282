"""Generalised Procrustes alignment of landmark configurations (similarity transforms).

To draw per-keypoint results on the anatomy (the fairness map), the images'
ground-truth landmarks are brought into one frame: each configuration is
centred, scaled to unit centroid size and rotated (no reflection) onto a
reference; the reference is the mean of the aligned configurations, iterated
until it no longer changes. All configurations are aligned at once (batched
2 x 2 SVDs, or the plane's closed form for a sample of a large archive), with
no Python loop per image.

The mean shape keeps the orientation of the first image (each new mean is
rotated onto the previous one) and is scaled back to the mean centroid size
of the inputs, so it is in the input unit (mm when a scale is known).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from fairlandmark.exceptions import InputError
from fairlandmark.inputs.study import Study
from fairlandmark.stats.kernel import single_threaded_blas

__all__ = ["ProcrustesResult", "generalized_procrustes", "optimal_rotation", "plane_rotation", "mean_shape_of_study",
           "MAX_SHAPE_IMAGES"]

# The mean shape only places results on a drawing: above this many images (paper scale: 10 hold-outs of 300)
# it comes from an evenly spaced sample of them. Each alignment pass costs one 2 x 2 SVD per image: an archive
# of a million images took minutes for a picture, and a sample of 10,000 still cost a fixed 0.13-0.18 s per
# audit (0.05 s for 3,000), a third of a 10,000-image audit. The sample's mean is within about 1/55 of the
# between-image spread of the whole archive's (a standard error), far below what a drawing shows.
MAX_SHAPE_IMAGES = 3_000
_CHECK_BLOCK = 8192  # images checked at a time before the alignment
MSG_SHAPES = "procrustes: expected configurations of shape (n, K, 2) with n >= 1 and K >= 2, got {shape}"
MSG_DEGENERATE = "procrustes: configuration {i} has all its landmarks at one point; it cannot be aligned"


@dataclass
class ProcrustesResult:
    """Result of :func:`generalized_procrustes`.

    Attributes
    ----------
    mean_shape : ndarray, shape (K, 2)
        Mean configuration in the input unit (mean centroid size), centred.
    aligned : ndarray, shape (n, K, 2), or None
        Each configuration centred, scaled to unit centroid size and rotated
        onto the unit-size mean (None with ``align=False``).
    centroid_size : ndarray, shape (n,)
        Centroid size of each input configuration.
    n_iter : int
    converged : bool
    """

    mean_shape: np.ndarray
    aligned: np.ndarray | None
    centroid_size: np.ndarray
    n_iter: int
    converged: bool


def optimal_rotation(source: ArrayLike, target: ArrayLike) -> np.ndarray:
    """Rotation matrices R (no reflection) minimising ``|source @ R - target|``.

    Parameters
    ----------
    source : ndarray, shape (..., K, 2)
    target : ndarray, shape (K, 2) or (..., K, 2)

    Returns
    -------
    ndarray, shape (..., 2, 2)

    Examples
    --------
    >>> a = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    >>> rot = np.array([[0.0, 1.0], [-1.0, 0.0]])  # 90 degrees
    >>> np.allclose(a @ rot @ optimal_rotation(a @ rot, a), a)
    True
    """
    m = np.einsum("...ki,...kj->...ij", np.asarray(source, dtype=float), np.asarray(target, dtype=float))
    u, _, vt = np.linalg.svd(m)
    r = u @ vt
    if r.shape[-2:] == (2, 2):
        # The sign of the 2 x 2 determinant (+-1 for these orthogonal matrices, so the sign of np.linalg.det's),
        # without a LAPACK factorisation per matrix.
        d = np.sign(r[..., 0, 0] * r[..., 1, 1] - r[..., 0, 1] * r[..., 1, 0])
    else:
        d = np.sign(np.linalg.det(r))
    d = np.where(d == 0, 1.0, d)
    u = u.copy()
    u[..., :, -1] *= d[..., None]  # a reflection is turned into the closest rotation
    return u @ vt


def plane_rotation(source: ArrayLike, target: ArrayLike) -> np.ndarray:
    """:func:`optimal_rotation` for 2-D landmarks, in closed form: two sums per configuration, no SVD.

    In the plane the best rotation by an angle t maximises ``cos(t) a + sin(t) b``, with ``a`` and ``b`` the
    sums below, so ``(cos t, sin t) = (a, b) / |(a, b)|``. The same rotation as the SVD's to rounding (not
    bit for bit); the identity where every rotation fits alike. Shapes as in :func:`optimal_rotation`.

    Examples
    --------
    >>> shape = np.array([[2.0, 0.0], [0.0, 1.0], [-2.0, 0.0], [0.0, -1.0]])
    >>> turn = np.array([[0.6, 0.8], [-0.8, 0.6]])  # about 53 degrees
    >>> bool(np.allclose(plane_rotation(shape @ turn, shape), turn.T))
    True
    """
    source, target = np.asarray(source, dtype=float), np.asarray(target, dtype=float)
    sx, sy, tx, ty = source[..., 0], source[..., 1], target[..., 0], target[..., 1]
    cos, sin = _best_angle((sx * tx + sy * ty).sum(axis=-1), (sx * ty - sy * tx).sum(axis=-1))
    return np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], -2)


def _best_angle(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(cos t, sin t) = (a, b) / |(a, b)|``, the angle that maximises ``cos(t) a + sin(t) b``; the identity
    (cos 1, sin 0) where ``a`` and ``b`` are both 0 and every rotation fits alike."""
    norm = np.hypot(a, b)
    still = norm == 0
    norm = np.where(still, 1.0, norm)
    return np.where(still, 1.0, a / norm), np.where(still, 0.0, b / norm)


def generalized_procrustes(shapes: ArrayLike, *, max_iter: int = 100, tol: float = 1e-10,
                           align: bool = True, closed_form: bool = False) -> ProcrustesResult:
    """Generalised Procrustes analysis with similarity transforms.

    Parameters
    ----------
    shapes : ndarray, shape (n, K, 2)
        Landmark configurations (no NaN).
    max_iter : int, default 100
    tol : float, default 1e-10
        Convergence: change of the unit-size mean (Frobenius norm).
    align : bool, default True
        Whether to align every configuration onto the final mean (``aligned``); False when only the mean
        shape is wanted (``aligned`` is then None), which saves one alignment pass.
    closed_form : bool, default False
        Rotate with :func:`plane_rotation` (half the cost: no SVD per configuration; the same result to
        rounding, not bit for bit) instead of :func:`optimal_rotation`.

    Returns
    -------
    ProcrustesResult

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> template = rng.normal(size=(6, 2))
    >>> angles = rng.uniform(0, 2 * np.pi, 20)
    >>> rot = np.stack([np.stack([np.cos(angles), -np.sin(angles)], -1),
    ...                 np.stack([np.sin(angles), np.cos(angles)], -1)], -2)
    >>> shapes = 3.0 * template @ rot + 5.0
    >>> res = generalized_procrustes(shapes)
    >>> bool(np.allclose(res.aligned, res.aligned[0], atol=1e-8))
    True
    """
    x = np.asarray(shapes, dtype=float)
    if x.ndim != 3 or x.shape[0] < 1 or x.shape[1] < 2 or x.shape[2] != 2 or not np.isfinite(x).all():
        raise InputError(MSG_SHAPES.format(shape=x.shape))
    if closed_form:  # centroids and sizes as sums of products: 5x faster than mean over the middle axis
        centred = x - (np.einsum("nkd->nd", x) / x.shape[1])[:, None, :]
        size = np.sqrt(np.einsum("nkd,nkd->n", centred, centred))
    else:
        centred = x - x.mean(axis=1, keepdims=True)
        size = np.sqrt((centred ** 2).sum(axis=(1, 2)))
    if np.any(size == 0):
        raise InputError(MSG_DEGENERATE.format(i=int(np.flatnonzero(size == 0)[0])))
    unit = np.divide(centred, size[:, None, None], out=centred)
    rotation = plane_rotation if closed_form else optimal_rotation
    if closed_form:  # each configuration as a row, and the same turned a quarter: (x, y) -> (-y, x)
        flat = unit.reshape(len(unit), -1)
        turned = np.empty_like(unit)
        np.negative(unit[..., 1], out=turned[..., 0])
        turned[..., 1] = unit[..., 0]
        turned = turned.reshape(len(unit), -1)
    mean = unit[0]
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        new = (_plane_rotated_sum(flat, turned, mean) if closed_form
               else (unit @ optimal_rotation(unit, mean)).mean(axis=0))
        new = new / np.sqrt((new ** 2).sum())
        new = new @ rotation(new, mean)  # keep the orientation: no drift of the frame
        change = float(np.sqrt(((new - mean) ** 2).sum()))
        mean = new
        if change < tol:
            converged = True
            break
    final = unit @ rotation(unit, mean) if align else None
    return ProcrustesResult(mean_shape=mean * size.mean(), aligned=final, centroid_size=size, n_iter=n_iter,
                            converged=converged)


def _plane_rotated_sum(flat: np.ndarray, turned: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The sum of n plane configurations, each rotated onto ``target`` (K, 2) as :func:`plane_rotation` does.

    ``flat`` holds them as rows (n, 2K), ``turned`` the same turned a quarter. Rotated by an angle t, a row
    becomes ``cos(t) flat + sin(t) turned``, and the two sums that give t are ``flat @ target`` and
    ``turned @ target``: four matrix-vector products per step, no (n, K, 2) temporaries and no 2 x 2 product
    per configuration.
    """
    t = target.reshape(-1)
    cos, sin = _best_angle(flat @ t, turned @ t)
    return (cos @ flat + sin @ turned).reshape(target.shape)


def _alignable(shapes: np.ndarray) -> np.ndarray:
    """Which configurations (n, K, 2) can be aligned: every landmark finite, and not all at one point.

    "At one point" is exact equality, not a spread of zero: landmarks that all equal 0.1 have a mean that
    need not round back to 0.1, so their spread is rounding noise, not anatomy. Cheaper than the spread too
    (two passes over the coordinates, no temporaries of floats), and every image of a study is checked.
    """
    flat = shapes.reshape(shapes.shape[0], shapes.shape[1] * shapes.shape[2])
    # Landmarks all at one point exactly when each equals the next: slices that line up, where comparing every
    # landmark with the first broadcasts over pairs of coordinates (twice the time).
    return np.isfinite(flat).all(axis=1) & (flat[:, 2:] != flat[:, :-2]).any(axis=1)


def _with_spread(shapes: np.ndarray) -> np.ndarray:
    """Which configurations have a centroid size above zero, computed as the alignment computes it.

    Distinct landmarks within about 1e-154 of each other square to zero; such an image is left out rather
    than failing the alignment.
    """
    return ((shapes - shapes.mean(axis=1, keepdims=True)) ** 2).sum(axis=(1, 2)) > 0


def mean_shape_of_study(study: Study) -> dict[str, Any] | None:
    """The ``anatomy`` block of an audit: mean aligned ground-truth shape, or None without coordinates.

    Each image counts once (an image tested in several runs is aligned once);
    an image whose true landmarks all lie at one point is left out.

    Returns
    -------
    dict or None
        ``keypoints``, ``mean_shape`` ([[x, y], ...], image orientation:
        y points down), ``unit``, ``n_images``, ``method``.
    """
    true = study.true_xy
    if true is None or true.shape[1] < 2:  # no coordinates, or a single keypoint: no anatomy to draw
        return None
    first = study.first_image_rows
    # Blocks of images: the checks' temporaries stay small at a million images (the same images kept). When
    # the images' first rows are consecutive (one run), the blocks are views: no copy of every image.
    n_first = len(first)
    consecutive = n_first > 0 and first[-1] - first[0] == n_first - 1
    kept = [_alignable(true[first[0] + lo:first[0] + min(lo + _CHECK_BLOCK, n_first)] if consecutive
                       else true[first[lo:lo + _CHECK_BLOCK]]) for lo in range(0, n_first, _CHECK_BLOCK)]
    first = first[np.concatenate(kept)] if kept else first
    if len(first) == 0:
        return None
    n_total = len(first)
    method = ("generalised Procrustes (translation, rotation, scale) of the ground truth; "
              "orientation of the first image, y down")
    # A sample's mean shape is an estimate already: its rotations come in closed form, at half the cost of an
    # SVD per image and equal to rounding. A study within the cap (paper scale) keeps the SVD's bits.
    sampled = n_total > MAX_SHAPE_IMAGES
    if sampled:
        first = first[np.linspace(0, n_total - 1, MAX_SHAPE_IMAGES).round().astype(np.int64)]
        method += f"; an evenly spaced sample of {MAX_SHAPE_IMAGES:,} of the {n_total:,} images"
    shapes = true[first]
    with single_threaded_blas():  # small products: a second BLAS thread only spins against the first
        try:
            res = generalized_procrustes(shapes, align=False, closed_form=sampled)  # only the mean shape is drawn
        except InputError:  # an image whose distinct landmarks have a spread that squares to 0: left out
            spread = _with_spread(shapes)
            shapes, first = shapes[spread], first[spread]
            if len(first) == 0:
                return None
            n_out = int((~spread).sum())
            method += f"; {n_out:,} image{'s' if n_out > 1 else ''} whose landmarks nearly coincide left out"
            res = generalized_procrustes(shapes, align=False, closed_form=sampled)
    return {"keypoints": list(study.keypoints), "mean_shape": res.mean_shape.tolist(), "unit": study.unit,
            "n_images": int(len(first)), "method": method}
