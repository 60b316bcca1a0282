"""The fairness map: per-keypoint unfairness drawn on the anatomy.

Each keypoint is drawn at its mean ground-truth position after generalised
Procrustes alignment of the images (the audit document's ``anatomy`` block,
see :func:`fairlandmark.stats.procrustes.mean_shape_of_study`), coloured by
its DP, or by its DP above chance (DP minus the randomized-attribute
baseline) when the audit has the baseline. A black ring marks a keypoint whose
gap is significant after multiple-testing correction; an outer ring marks one
whose gap also survives adjustment (the per-keypoint ``adjusted.significant``
field, when the audit has it). One panel per attribute, one colour scale for
all panels. Without coordinates (``error_mm`` input) the audit has no
``anatomy`` block and the map is left out with a note.

Examples
--------
>>> import numpy as np, fairlandmark
>>> rng = np.random.default_rng(0)
>>> true = rng.uniform(0, 100, (40, 5, 2)); pred = true + rng.normal(0, 10, true.shape)
>>> res = fairlandmark.audit_arrays(pred, true, {"sex": ["F", "M"] * 20}, spacing_mm=0.1)
>>> fig = fairness_map(res)
>>> len([ax for ax in fig.axes if ax.get_label() != "<colorbar>"])
1
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fairlandmark.exceptions import InputError
from fairlandmark.formatting import num
from fairlandmark.render.canvas import figure_legend, new_figure
from fairlandmark.document import load_audit

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["fairness_map", "has_anatomy", "map_values", "MSG_NO_ANATOMY", "COLOR_BY"]

MSG_NO_ANATOMY = ("the fairness map needs landmark coordinates of two or more keypoints; this audit has none "
                  "(error_mm input) or a single keypoint, so the map is left out")
MSG_COLOR_BY = "color_by: choose among {choices}, got {value!r}"
MSG_ATTRIBUTE = "attribute {name!r} is not in the audit; its attributes are {known}"
COLOR_BY = ("auto", "dp", "above_chance")
RING_COLOUR = "#111111"


def has_anatomy(doc: Mapping[str, Any]) -> bool:
    """Whether an audit document can be drawn as a fairness map."""
    block = doc.get("anatomy")
    return isinstance(block, Mapping) and bool(block.get("mean_shape"))


def map_values(doc: Mapping[str, Any], attribute: str, *,
               color_by: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str]:
    """Per-keypoint values drawn on the map for one attribute.

    Parameters
    ----------
    doc : dict
        The audit document.
    attribute : str
    color_by : {"auto", "dp", "above_chance"}
        ``auto`` is ``above_chance`` when the audit has the randomized baseline.

    Returns
    -------
    values : ndarray, shape (K,)
        In the order of ``doc["anatomy"]["keypoints"]``.
    significant : ndarray of bool, shape (K,)
    survives : ndarray of bool, shape (K,) or None
        ``adjusted.significant`` when the audit has that field.
    label : str
        What the colour shows.
    """
    if color_by not in COLOR_BY:
        raise InputError(MSG_COLOR_BY.format(choices=", ".join(COLOR_BY), value=color_by))
    recs = {str(r.get("keypoint")): r for r in doc.get("per_keypoint", []) if r.get("attribute") == attribute}
    kps = [str(k) for k in doc["anatomy"]["keypoints"]]
    rows = [recs.get(k, {}) for k in kps]
    dp = np.array([num(r.get("dp")) for r in rows])
    base = np.array([num(r.get("baseline_mean")) for r in rows])
    use_chance = color_by == "above_chance" or (color_by == "auto" and np.isfinite(base).any())
    values = dp - base if use_chance else dp
    label = "DP above chance (DP - randomized baseline)" if use_chance else "DP"
    significant = np.array([bool(r.get("significant")) for r in rows])
    has_adjusted = any(isinstance(r.get("adjusted"), dict) and "significant" in r["adjusted"] for r in rows)
    survives = np.array([bool((r.get("adjusted") or {}).get("significant")) for r in rows]) if has_adjusted else None
    return values, significant, survives, label


def fairness_map(source: object, *, attribute: str | Sequence[str] | None = None, color_by: str = "auto",
                 labels: bool = True, title: str | None = None) -> Figure:
    """Keypoints on the mean aligned anatomy, coloured by their gap, one panel per attribute.

    Parameters
    ----------
    source : path, dict or AuditResult
    attribute : str or list of str, optional
        Default: every attribute of the audit.
    color_by : {"auto", "dp", "above_chance"}, default "auto"
    labels : bool, default True
        Write each keypoint's name beside it.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    InputError
        The audit has no ``anatomy`` block (no coordinates), or an unknown
        attribute or colour option.
    """
    doc = load_audit(source)
    if not has_anatomy(doc):
        raise InputError(MSG_NO_ANATOMY)
    known = list(doc.get("attributes", []))
    attrs = known if attribute is None else ([attribute] if isinstance(attribute, str) else list(attribute))
    for a in attrs:
        if a not in known:
            raise InputError(MSG_ATTRIBUTE.format(name=a, known=", ".join(map(str, known))))
    shape = np.asarray(doc["anatomy"]["mean_shape"], dtype=float)
    kps = [str(k) for k in doc["anatomy"]["keypoints"]]
    k = len(kps)
    panels = [map_values(doc, a, color_by=color_by) for a in attrs]
    label = panels[0][3] if panels else "DP"
    allv = np.concatenate([p[0] for p in panels]) if panels else np.array([0.0])
    finite = allv[np.isfinite(allv)]
    diverging = "chance" in label
    if diverging:
        vmax = max(float(np.abs(finite).max()) if finite.size else 0.0, 0.02)
        vmin, cmap = -vmax, "RdBu_r"
    else:
        vmin, vmax, cmap = 0.0, max(float(finite.max()) if finite.size else 0.0, 0.02), "YlOrRd"

    n = max(len(attrs), 1)
    cols = min(n, 3)
    rows = int(math.ceil(n / cols))
    span = np.ptp(shape, axis=0)
    aspect = float(span[1] / span[0]) if span[0] > 0 else 1.0
    panel_w = 4.2 if k <= 25 else 5.0
    panel_h = float(np.clip(panel_w * aspect, 2.8, 6.5))
    fig = new_figure(panel_w * cols + 1.4, panel_h * rows + 0.9)
    axes = fig.subplots(rows, cols, squeeze=False)
    size = 150 if k <= 20 else (95 if k <= 35 else 65)
    font = 8 if k <= 20 else (7 if k <= 35 else 6)
    centre = shape.mean(axis=0)
    direction = shape - centre
    norm = np.hypot(direction[:, 0], direction[:, 1])
    direction = direction / np.where(norm > 0, norm, 1.0)[:, None]
    offset = 0.035 * float(max(span.max(), 1e-9))
    mappable = None
    for i, ax in enumerate(axes.ravel()):
        if i >= len(attrs):
            ax.set_visible(False)
            continue
        values, significant, survives, _ = panels[i]
        missing = ~np.isfinite(values)
        mappable = ax.scatter(shape[~missing, 0], shape[~missing, 1], c=values[~missing], cmap=cmap, vmin=vmin,
                              vmax=vmax, s=size, edgecolors="#666666", linewidths=0.5, zorder=3)
        if missing.any():
            ax.scatter(shape[missing, 0], shape[missing, 1], s=size, facecolors="white", edgecolors="#999999",
                       linewidths=0.8, zorder=3, label="no DP (groups too small)")
        if significant.any():
            ax.scatter(shape[significant, 0], shape[significant, 1], s=size, facecolors="none",
                       edgecolors=RING_COLOUR, linewidths=2.0, zorder=4, label="significant after correction")
        if survives is not None and survives.any():
            ax.scatter(shape[survives, 0], shape[survives, 1], s=size * 2.3, facecolors="none",
                       edgecolors=RING_COLOUR, linewidths=1.0, linestyles="--", zorder=4,
                       label="survives adjustment")
        if labels:
            for j, name in enumerate(kps):
                x, y = shape[j] + direction[j] * offset
                ax.text(x, y, name, fontsize=font, ha="center", va="center", color="#222222", zorder=5)
        ax.set_aspect("equal", adjustable="datalim")
        ax.invert_yaxis()  # image coordinates: y points down
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ("top", "right", "bottom", "left"):
            ax.spines[side].set_visible(False)
        ax.set_title(str(attrs[i]), fontsize=10, loc="left")
    if mappable is not None:
        bar = fig.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.8, pad=0.02)
        bar.set_label(label, fontsize=8)
        bar.ax.tick_params(labelsize=7)
    figure_legend(fig, axes.ravel(), loc="outside lower center", ncols=None)  # one row below the panels
    unit = doc["anatomy"].get("unit", "")
    fig.suptitle(title or f"Where the gaps sit: keypoints at their mean aligned position "
                          f"({doc['anatomy'].get('n_images', '?')} images, {unit})", fontsize=10)
    return fig
