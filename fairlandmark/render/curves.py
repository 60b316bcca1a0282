"""Figures of the whole error curves: SDR(phi) of each group, for the flagged keypoints.

Reads the audit document's ``curves`` block (see
:mod:`fairlandmark.stats.curves`). One panel per keypoint: each group's SDR
over the threshold grid, the primary threshold as a dotted line, and the
curve gap (largest vertical gap between group curves) as a bar at the
threshold where it occurs. Keypoints whose curve gap is significant after
correction come first; then the largest gaps.

Examples
--------
>>> import numpy as np, fairlandmark
>>> rng = np.random.default_rng(0)
>>> true = rng.uniform(0, 100, (40, 5, 2)); pred = true + rng.normal(0, 10, true.shape)
>>> res = fairlandmark.audit_arrays(pred, true, {"sex": ["F", "M"] * 20}, spacing_mm=0.1)
>>> fig = error_curves_figure(res, top=2)
>>> len([ax for ax in fig.axes if ax.get_visible()])
2
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fairlandmark.exceptions import InputError
from fairlandmark.formatting import num
from fairlandmark.render.canvas import FAMILY_COLOURS, figure_legend, new_figure, open_axes
from fairlandmark.document import load_audit

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["error_curves_figure", "has_curves", "flagged_curve_keypoints", "extra_curve_figure", "curve_findings",
           "MSG_NO_CURVES"]

MSG_NO_CURVES = "this audit has no error curves (it was written without them); re-run the audit"
MSG_ATTRIBUTE = "attribute {name!r} is not in the audit's curves; its attributes are {known}"
MSG_KEYPOINT = "keypoint {kp!r} is not in the audit's curves; its keypoints are {known}"


def has_curves(doc: Mapping[str, Any]) -> bool:
    """Whether the audit document has error curves."""
    block = doc.get("curves")
    return isinstance(block, Mapping) and bool(block.get("records"))


def extra_curve_figure(doc: Mapping[str, Any], attribute: str) -> bool:
    """Whether reports add a curves figure for ``attribute`` beside the SDR-over-thresholds one.

    With one threshold the SDR figure itself draws the curves; with several,
    a curves figure is added only when some curve gap of the attribute is
    significant after correction (the flagged keypoints).
    """
    if not has_curves(doc) or len(doc.get("thresholds", [])) <= 1:
        return False
    return any(r.get("significant") for r in doc["curves"]["records"] if r.get("attribute") == attribute)


def curve_findings(doc: Mapping[str, Any], *, top: int = 5) -> list[str]:
    """Findings in words: the curve gaps significant after correction (none when the test did not run).

    Examples
    --------
    >>> doc = {"curves": {"unit": "mm", "records": [
    ...     {"attribute": "sex", "keypoint": 3, "gap": 0.21, "gap_phi": 2.5, "p_adjusted": 0.01, "significant": True}]}}
    >>> curve_findings(doc)
    ['Error curves: 1 curve gap(s) significant after correction: keypoint 3 (sex) 0.210 at 2.5 mm.']
    """
    if not has_curves(doc):
        return []
    block = doc["curves"]
    recs = [r for r in block["records"] if r.get("significant")]
    if not recs:
        tested = any("p_adjusted" in r for r in block["records"])
        return ["Error curves: no curve gap is significant after correction."] if tested else []
    recs.sort(key=lambda r: (num(r.get("p_adjusted")), -num(r.get("gap"))))
    unit = block.get("unit") or doc.get("unit", "")
    items = [f"keypoint {r.get('keypoint')} ({r.get('attribute')}) {num(r.get('gap')):.3f} at "
             f"{num(r.get('gap_phi')):g} {unit}" for r in recs[:top]]
    more = f" and {len(recs) - top} more" if len(recs) > top else ""
    return [f"Error curves: {len(recs)} curve gap(s) significant after correction: {'; '.join(items)}{more}."]


def flagged_curve_keypoints(doc: Mapping[str, Any], attribute: str, top: int = 4) -> list[Any]:
    """Keypoints to draw: significant curve gaps first (by adjusted p), then the largest gaps.

    Examples
    --------
    >>> doc = {"curves": {"records": [{"attribute": "sex", "keypoint": 1, "gap": 0.1},
    ...                               {"attribute": "sex", "keypoint": 2, "gap": 0.3}]}}
    >>> flagged_curve_keypoints(doc, "sex", top=1)
    [2]
    """
    recs = [r for r in doc["curves"]["records"] if r.get("attribute") == attribute]

    def key(r: Mapping[str, Any]) -> tuple[int, float, float]:
        sig = bool(r.get("significant"))
        p = num(r.get("p_adjusted"))
        gap = num(r.get("gap"))
        return (0 if sig else 1, p if sig and not math.isnan(p) else 0.0, -gap if not math.isnan(gap) else 1.0)

    return [r.get("keypoint") for r in sorted(recs, key=key)[:top]]


def error_curves_figure(source: object, *, attribute: str | None = None, keypoints: Sequence[object] | None = None,
                        top: int = 4, title: str | None = None) -> Figure:
    """Group error curves (SDR over the threshold grid) for chosen keypoints.

    Parameters
    ----------
    source : path, dict or AuditResult
    attribute : str, optional
        Default: the first attribute.
    keypoints : list, optional
        Default: :func:`flagged_curve_keypoints` (up to ``top``).
    top : int, default 4
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    doc = load_audit(source)
    if not has_curves(doc):
        raise InputError(MSG_NO_CURVES)
    block = doc["curves"]
    attrs = list(dict.fromkeys(r.get("attribute") for r in block["records"]))
    attr = attrs[0] if attribute is None else attribute
    if attr not in attrs:
        raise InputError(MSG_ATTRIBUTE.format(name=attr, known=", ".join(map(str, attrs))))
    recs = {str(r.get("keypoint")): r for r in block["records"] if r.get("attribute") == attr}
    chosen = flagged_curve_keypoints(doc, attr, top) if keypoints is None else list(keypoints)
    for p in chosen:
        if str(p) not in recs:
            raise InputError(MSG_KEYPOINT.format(kp=p, known=", ".join(recs)))
    phi = np.asarray(block["phi"], dtype=float)
    unit = block.get("unit") or doc.get("unit", "")
    primary = num(doc.get("primary_threshold"))
    groups: list = []
    for r in recs.values():
        groups += [g for g in (r.get("sdr_by_group") or {}) if g not in groups]
    colours = {g: FAMILY_COLOURS[i % len(FAMILY_COLOURS)] for i, g in enumerate(groups)}
    n = max(len(chosen), 1)
    cols = min(n, 4)
    rows = int(math.ceil(n / cols))
    fig = new_figure(max(6.5, 2.9 * cols + 1.6), 0.8 + 2.6 * rows)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    for i, ax in enumerate(axes.ravel()):
        if i >= len(chosen):
            ax.set_visible(False)
            continue
        rec = recs[str(chosen[i])]
        curves = rec.get("sdr_by_group") or {}
        for g in groups:
            ys = np.array([num(v) for v in curves.get(g) or []])
            if ys.size != phi.size or np.isnan(ys).all():
                continue
            ax.plot(phi, ys, drawstyle="steps-post", linewidth=1.6, color=colours[g], label=str(g))
        gap, at = num(rec.get("gap")), num(rec.get("gap_phi"))
        if not math.isnan(at):
            t = int(np.argmin(np.abs(phi - at)))
            vals = [num((curves.get(g) or [math.nan] * phi.size)[t]) for g in groups]
            vals = [v for v in vals if not math.isnan(v)]
            if len(vals) >= 2:
                # Just right of the grid point: the steps hold the value there, so the bar does not hide a riser.
                step = float(np.diff(phi).min()) if phi.size > 1 else 1.0
                ax.vlines(at + 0.3 * step, min(vals), max(vals), colors="#222222", linewidth=2.2,
                          label="curve gap")
        if not math.isnan(primary):
            ax.axvline(primary, color="#888888", linestyle=":", linewidth=1.0)
        sig = " *" if rec.get("significant") else ""
        p = num(rec.get("p_adjusted"))
        p_text = f" · p adj {p:.3g}" if not math.isnan(p) else ""
        ax.set_title(f"keypoint {chosen[i]} · gap {gap:.3f}{p_text}{sig}", fontsize=9)
        ax.set_xlabel(f"threshold φ ({unit})", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.tick_params(labelsize=8)
        ax.grid(color="#e6e6e6", linewidth=0.8)
        open_axes(ax)
    for ax in axes[:, 0]:
        ax.set_ylabel("SDR(φ)")
    figure_legend(fig, axes.ravel(), title=str(attr))
    fig.suptitle(title or f"Error curves by {attr}: SDR over thresholds (dotted: primary threshold)", fontsize=11)
    return fig
