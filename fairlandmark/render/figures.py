"""Figures of an audit (matplotlib, the optional ``[report]`` extra).

Every function takes the audit document (a path, dict or AuditResult, see
:func:`fairlandmark.render.html.load_audit`) and returns a
:class:`matplotlib.figure.Figure` drawn on the Agg canvas; pyplot is never
used, so nothing global changes and figures are freed with their object.
Widths and label sizes scale with the number of keypoints, so the same
figure reads well with 10 and with 50 keypoints.

- :func:`mre_bars`: per-keypoint MRE coloured by family, with the overall and
  family mean lines (the paper's Fig. 2, top).
- :func:`dp_bars`: per-keypoint DP with error bars, the randomized baseline
  beside it and significance marks (Fig. 2, bottom), one panel per attribute.
- :func:`compare_bars`: two audits side by side, e.g. vanilla against
  mitigated (Fig. 3).
- :func:`sdr_curves`: SDR of each group over the thresholds, for chosen
  keypoints.

:func:`save_figure` writes PNG or SVG (by suffix) atomically;
:func:`write_figures` writes the standard set to a folder.

Examples
--------
>>> import numpy as np, fairlandmark
>>> rng = np.random.default_rng(0)
>>> true = rng.uniform(0, 100, (40, 5, 2)); pred = true + rng.normal(0, 10, true.shape)
>>> res = fairlandmark.audit_arrays(pred, true, {"sex": ["F", "M"] * 20}, spacing_mm=0.1)
>>> fig = dp_bars(res)
>>> len(fig.axes)
1
"""

from __future__ import annotations

import base64
import io
import math
import os
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fairlandmark.exceptions import InputError
from fairlandmark.document import (AuditDocument, AuditSource, has_significance, keypoint_frame, keypoint_mre,
                                   load_audit, overall_row)
from fairlandmark.formatting import num, threshold_key
from fairlandmark.render.canvas import (FAMILY_COLOURS, MissingExtraError, figure_legend, new_figure,
                                         open_axes, require_matplotlib)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["mre_bars", "dp_bars", "compare_bars", "sdr_curves", "save_figure", "write_figures", "png_base64",
           "require_matplotlib", "MissingExtraError"]

MSG_FORMAT = "{path}: unknown figure format {suffix!r}; use .png or .svg"
MSG_FORMATS = "formats: choose among png, svg; got {value!r}"
MSG_ATTRIBUTE = "attribute {name!r} is not in the audit; its attributes are {known}"
MSG_KEYPOINT = "keypoint {kp!r} is not in the audit; its keypoints are {known}"

DP_COLOUR, BASE_COLOUR, SIG_COLOUR = "#4C72B0", "#B0B0B0", "#C0392B"
BEFORE_COLOUR, AFTER_COLOUR = "#9DB4D6", "#2F5D9E"


def _new_figure(width: float, height: float) -> Figure:
    return new_figure(width, height)


def _width(n_bars: float, per: float = 0.2, lo: float = 6.5, hi: float = 12.5) -> float:
    return float(min(max(lo, 1.8 + per * n_bars), hi))


def _style_axis(ax: Axes, labels: Sequence[object], *, ylabel: str) -> None:
    k = len(labels)
    ax.set_xticks(np.arange(k))
    rotate = k > 16 or max((len(str(x)) for x in labels), default=0) > 4
    size = 9 if k <= 20 else (8 if k <= 40 else 7)
    ax.set_xticklabels([str(x) for x in labels], rotation=90 if rotate else 0, fontsize=size)
    ax.set_xlim(-0.7, k - 0.3)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", color="#e6e6e6", linewidth=0.8)
    ax.set_axisbelow(True)
    open_axes(ax)


def _family_colours(families: Iterable[str]) -> dict[str, str]:
    names = []
    for f in families:
        if f and f not in names:
            names.append(f)
    return {f: FAMILY_COLOURS[i % len(FAMILY_COLOURS)] for i, f in enumerate(names)}


def _attributes(doc: AuditDocument, attribute: str | Iterable[str] | None) -> list[str]:
    known = list(doc.get("attributes", []))
    if attribute is None:
        return known
    chosen = [attribute] if isinstance(attribute, str) else list(attribute)
    for a in chosen:
        if a not in known:
            raise InputError(MSG_ATTRIBUTE.format(name=a, known=", ".join(map(str, known))))
    return chosen


# -- MRE -----------------------------------------------------------------------------------------------------
def mre_bars(source: AuditSource, *, title: str | None = None) -> Figure:
    """Per-keypoint MRE bars coloured by family, with overall and family mean lines.

    Parameters
    ----------
    source : path, dict or AuditResult
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    doc = load_audit(source)
    kp = keypoint_mre(doc)
    unit = doc.get("unit", "")
    k = len(kp)
    fig = _new_figure(_width(k), 3.6)
    ax = fig.add_subplot()
    colours = _family_colours(kp["family"]) if len(kp) else {}
    bar_colours = [colours.get(f, FAMILY_COLOURS[0]) for f in kp["family"]]
    x = np.arange(k)
    yerr = None
    if len(kp) and kp["mre_std"].notna().any():
        std, mre = np.nan_to_num(kp["mre_std"].to_numpy(float)), np.nan_to_num(kp["mre"].to_numpy(float))
        yerr = np.vstack([np.minimum(std, mre), std])  # an error is never below 0
    ax.bar(x, kp["mre"].to_numpy(float), width=0.75, color=bar_colours, yerr=yerr,
           error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "#333333"})
    handles: list[Any] = []
    from matplotlib.patches import Patch

    for fam, col in colours.items():
        handles.append(Patch(color=col, label=fam))
    allrow = overall_row(doc)
    overall = num(allrow.get("mre")) if allrow else float(np.nanmean(kp["mre"])) if k else math.nan
    if not math.isnan(overall):
        handles.append(ax.axhline(overall, color="#222222", linestyle="--", linewidth=1.2,
                                  label=f"overall {overall:.2f} {unit}"))
    for fam, col in colours.items():
        idx = np.flatnonzero(kp["family"].to_numpy() == fam)
        mean = num(overall_row(doc, fam).get("mre")) if overall_row(doc, fam) else float(np.nanmean(kp["mre"][idx]))
        if not math.isnan(mean) and len(idx):
            handles.append(ax.hlines(mean, idx.min() - 0.45, idx.max() + 0.45, colors=col, linestyles=":",
                                     linewidth=2.0, label=f"{fam} mean {mean:.2f}"))
    _style_axis(ax, list(kp["keypoint"]), ylabel=f"MRE ({unit})")
    ax.set_xlabel("keypoint")
    ax.set_title(title or f"Mean radial error per keypoint ({doc.get('n_runs', '?')} run(s))", fontsize=11)
    if handles:
        ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return fig


# -- DP ------------------------------------------------------------------------------------------------------
def _dp_err(sub: pd.DataFrame) -> tuple[np.ndarray | None, Any]:
    """Asymmetric error bars: ± std over runs, or the old percentile interval of DP for audits without the pair gap.

    The percentile interval of a maximum often lies above DP (see
    :mod:`fairlandmark.stats.intervals`), so audits that carry the pair gap's
    interval show DP ± std over runs here and the gap interval in the tables.
    """
    dp = sub["dp"].to_numpy(float)
    has_gap = "gap_low" in sub and sub["gap_low"].notna().any()
    if sub["dp_low"].notna().any() and not has_gap:
        lo = np.clip(dp - sub["dp_low"].to_numpy(float), 0, None)
        hi = np.clip(sub["dp_high"].to_numpy(float) - dp, 0, None)
        return np.nan_to_num(np.vstack([lo, hi])), "interval"
    if sub["dp_std"].notna().any():
        std = np.nan_to_num(sub["dp_std"].to_numpy(float))
        return np.vstack([np.minimum(std, np.nan_to_num(dp)), std]), "std"
    return None, None


def dp_bars(source: AuditSource, *, attribute: str | Iterable[str] | None = None, title: str | None = None) -> Figure:
    """Per-keypoint DP bars with error bars, the randomized baseline and significance marks.

    One panel per attribute (all attributes by default). Error bars are the
    bootstrap interval when the audit has one, else ± std over runs. The
    baseline bar (grey) appears when the audit has significance; a red star
    marks keypoints significant after correction.

    Parameters
    ----------
    source : path, dict or AuditResult
    attribute : str or list of str, optional
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    doc = load_audit(source)
    attrs = _attributes(doc, attribute)
    frame = keypoint_frame(doc)
    sig = has_significance(doc)
    k = len(doc.get("keypoints", []))
    n = max(len(attrs), 1)
    fig = _new_figure(_width(k * (1.3 if sig else 1.0)), 1.0 + 2.6 * n)
    axes = fig.subplots(n, 1, squeeze=False, sharex=True)[:, 0]
    thr = threshold_key(doc.get("primary_threshold", 2.0))
    for ax, a in zip(axes, attrs):
        sub = frame[frame["attribute"] == a].reset_index(drop=True)
        x = np.arange(len(sub))
        dp = sub["dp"].to_numpy(float)
        err, kind = _dp_err(sub)
        has_base = sig and sub["baseline_mean"].notna().any()
        w = 0.4 if has_base else 0.75
        off = -w / 2 if has_base else 0.0
        label = {"interval": "DP (bootstrap interval)", "std": "DP (± std over runs)"}.get(kind, "DP")
        ax.bar(x + off, dp, width=w, color=DP_COLOUR, yerr=err, label=label,
               error_kw={"elinewidth": 0.8, "capsize": 1.5 if k > 30 else 2.5, "ecolor": "#333333"})
        top = np.nan_to_num(dp) + (err[1] if err is not None else 0)
        if has_base:
            bstd = np.nan_to_num(sub["baseline_std"].to_numpy(float))
            bm = sub["baseline_mean"].to_numpy(float)
            ax.bar(x + w / 2, bm, width=w, color=BASE_COLOUR,
                   yerr=np.vstack([np.minimum(bstd, np.nan_to_num(bm)), bstd]),
                   label="randomized baseline (± std)",
                   error_kw={"elinewidth": 0.8, "capsize": 1.5 if k > 30 else 2.5, "ecolor": "#666666"})
            top = np.maximum(top, np.nan_to_num(bm) + bstd)
        ymax = float(np.nanmax(top)) if len(top) and np.isfinite(top).any() else 0.1
        ymax = max(ymax, 0.05)
        if sig:
            mask = sub["significant"].to_numpy(bool)
            if mask.any():
                ax.scatter(x[mask] + off, top[mask] + 0.04 * ymax, marker="*", s=55 if k <= 30 else 35,
                           color=SIG_COLOUR, zorder=5, label="significant (adjusted)")
        ax.set_ylim(0, ymax * 1.15)
        _style_axis(ax, list(sub["keypoint"]), ylabel=f"DP (SDR@{thr})")
        ax.set_title(f"{a}", fontsize=10, loc="left")
    figure_legend(fig, axes)
    axes[-1].set_xlabel("keypoint")
    fig.suptitle(title or "Demographic parity per keypoint", fontsize=11)
    return fig


# -- before / after ------------------------------------------------------------------------------------------
def compare_bars(before: AuditSource, after: AuditSource, *, labels: Sequence[str] = ("before", "after"),
                 attribute: str | Iterable[str] | None = None, title: str | None = None) -> Figure:
    """Two audits side by side: DP per keypoint for each attribute, then MRE.

    Keypoints and attributes present in both audits are shown, in the order
    of ``after``.

    Parameters
    ----------
    before, after : path, dict or AuditResult
    labels : (str, str)
        Legend names, e.g. ``("vanilla", "mitigated")``.
    attribute : str or list of str, optional
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    b, a = load_audit(before, what="before"), load_audit(after, what="after")
    attrs = [x for x in _attributes(a, attribute) if x in b.get("attributes", [])]
    fb, fa = keypoint_frame(b), keypoint_frame(a)
    keys_b = {str(x) for x in b.get("keypoints", [])}
    kps = [x for x in a.get("keypoints", []) if str(x) in keys_b]
    k = len(kps)
    n = len(attrs) + 1
    fig = _new_figure(_width(k * 1.3), 1.0 + 2.5 * n)
    axes = fig.subplots(n, 1, squeeze=False, sharex=True)[:, 0]
    x = np.arange(k)
    w = 0.4
    cap = 1.5 if k > 30 else 2.5

    def aligned(frame: pd.DataFrame, attr: str | None, col: str) -> np.ndarray:
        sub = frame[frame["attribute"] == attr] if attr is not None else frame
        m = dict(zip(sub["keypoint"].astype(str), sub[col]))
        return np.array([num(m.get(str(p))) for p in kps])

    for ax, attr in zip(axes, attrs):
        for j, (frame, lab, col) in enumerate(((fb, labels[0], BEFORE_COLOUR), (fa, labels[1], AFTER_COLOUR))):
            cols = {c: aligned(frame, attr, c) for c in ("dp", "dp_std", "dp_low", "dp_high", "gap_low")}
            err, _ = _dp_err(pd.DataFrame(cols))
            ax.bar(x + (j - 0.5) * w, cols["dp"], width=w, color=col, label=lab,
                   yerr=err if err is not None and err.any() else None,
                   error_kw={"elinewidth": 0.7, "capsize": cap, "ecolor": "#333333"})
        _style_axis(ax, kps, ylabel=f"DP · {attr}")
    ax = axes[-1]
    mb, ma = keypoint_mre(b), keypoint_mre(a)
    for j, (m, lab, col) in enumerate(((mb, labels[0], BEFORE_COLOUR), (ma, labels[1], AFTER_COLOUR))):
        vals = dict(zip(m["keypoint"].astype(str), m["mre"]))
        ax.bar(x + (j - 0.5) * w, [num(vals.get(str(p))) for p in kps], width=w, color=col, label=lab)
    _style_axis(ax, kps, ylabel=f"MRE ({a.get('unit', '')})")
    figure_legend(fig, axes, loc="outside lower center", ncols=2)  # below, clear of the title
    ax.set_xlabel("keypoint")
    fig.suptitle(title or f"{labels[0]} vs {labels[1]}", fontsize=11)
    return fig


# -- SDR over thresholds -------------------------------------------------------------------------------------
def sdr_curves(source: AuditSource, *, attribute: str | None = None, keypoints: Sequence[object] | None = None,
               top: int = 4, title: str | None = None) -> Figure:
    """SDR of each group over the thresholds, one panel per chosen keypoint.

    Parameters
    ----------
    source : path, dict or AuditResult
    attribute : str, optional
        Default: the first attribute.
    keypoints : list, optional
        Keypoints to show; default the ``top`` ones with the largest DP.
    top : int, default 4
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    doc = load_audit(source)
    attr = _attributes(doc, attribute)[0] if attribute is not None else doc.get("attributes", [None])[0]
    if len(doc.get("thresholds", [])) <= 1 and (doc.get("curves") or {}).get("records"):
        # One threshold would draw a row of dots: draw the whole error curves instead.
        from fairlandmark.render.curves import error_curves_figure

        return error_curves_figure(doc, attribute=attr, keypoints=keypoints, top=top, title=title)
    recs = {str(r.get("keypoint")): r for r in doc["per_keypoint"] if r.get("attribute") == attr}
    if keypoints is None:
        ranked = sorted(recs.values(), key=lambda r: -num(r.get("dp")) if not math.isnan(num(r.get("dp"))) else 1)
        chosen = [r.get("keypoint") for r in ranked[:top]]
    else:
        chosen = list(keypoints)
        for p in chosen:
            if str(p) not in recs:
                raise InputError(MSG_KEYPOINT.format(kp=p, known=", ".join(map(str, doc.get("keypoints", [])))))
    thresholds = [float(t) for t in doc.get("thresholds", [])]
    unit = doc.get("unit", "")
    groups = [g["group"] for g in doc.get("groups") or [] if g.get("attribute") == attr]
    for r in recs.values():
        groups += [g for g in (r.get("sdr_by_group") or {}) if g not in groups]
    n = max(len(chosen), 1)
    cols = min(n, 4)
    rows = int(math.ceil(n / cols))
    fig = _new_figure(max(6.5, 2.8 * cols + 1.4), 0.8 + 2.5 * rows)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    colours = {g: FAMILY_COLOURS[i % len(FAMILY_COLOURS)] for i, g in enumerate(groups)}
    for i, ax in enumerate(axes.ravel()):
        if i >= len(chosen):
            ax.set_visible(False)
            continue
        rec = recs[str(chosen[i])]
        by_thr = rec.get("sdr_by_threshold") or {threshold_key(thresholds[0]): rec.get("sdr_by_group") or {}}
        for g in groups:
            ys = [num((by_thr.get(threshold_key(t)) or {}).get(g)) for t in thresholds]
            if all(math.isnan(y) for y in ys):
                continue
            ax.plot(thresholds, ys, marker="o", markersize=4, linewidth=1.5, color=colours[g], label=str(g))
        ax.set_title(f"keypoint {chosen[i]} · DP {num(rec.get('dp')):.3f}" + (" *" if rec.get("significant") else ""),
                     fontsize=9)
        ax.set_xlabel(f"threshold ({unit})", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        if len(thresholds) > 0:
            ax.set_xticks(thresholds)
            ax.set_xticklabels([threshold_key(t) for t in thresholds], fontsize=8)
        ax.grid(color="#e6e6e6", linewidth=0.8)
        open_axes(ax)
    for ax in axes[:, 0]:
        ax.set_ylabel("SDR")
    figure_legend(fig, axes.ravel(), title=str(attr))
    fig.suptitle(title or f"SDR over thresholds by {attr}", fontsize=11)
    return fig


# -- output --------------------------------------------------------------------------------------------------
def _render(fig: Figure, fmt: str, dpi: float) -> bytes:
    buf = io.BytesIO()
    metadata = {"Software": None} if fmt == "png" else {"Date": None, "Creator": None}
    fig.savefig(buf, format=fmt, dpi=dpi, metadata=metadata, facecolor="white")
    return buf.getvalue()


def png_base64(fig: Figure, *, dpi: float = 110) -> str:
    """The figure as base64 PNG text (for a ``data:`` URI)."""
    return base64.b64encode(_render(fig, "png", dpi)).decode("ascii")


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: float = 150) -> str:
    """Write ``fig`` to ``path`` (``.png`` or ``.svg``) atomically; returns the path."""
    from fairlandmark.files import atomic_write_bytes

    suffix = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    if suffix not in ("png", "svg"):
        raise InputError(MSG_FORMAT.format(path=path, suffix=suffix))
    atomic_write_bytes(path, _render(fig, suffix, dpi))
    return os.fspath(path)


def _slug(text: object) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "x"


def write_figures(source: AuditSource, folder: str | os.PathLike[str], *, formats: str | Sequence[str] = ("png", "svg"),
                  baseline: AuditSource | None = None, labels: Sequence[str] = ("before", "after"),
                  dpi: float = 150) -> list[str]:
    """Write the standard figures of an audit to ``folder``.

    Files: ``mre_by_keypoint``, ``dp_by_keypoint``, ``sdr_<attribute>`` (the
    whole error curves when the audit has one threshold), ``curves_<attribute>``
    (error curves, with several thresholds, where a curve gap is significant), ``fairness_map`` (with
    coordinates) and, with ``baseline``, ``compare``; one file per format.

    Returns
    -------
    list of str
        The paths written.
    """
    formats = [formats] if isinstance(formats, str) else list(formats)
    if not formats or any(f not in ("png", "svg") for f in formats):
        raise InputError(MSG_FORMATS.format(value=formats))
    doc = load_audit(source)
    figs = [("mre_by_keypoint", mre_bars(doc)), ("dp_by_keypoint", dp_bars(doc))]
    used = {name for name, _ in figs}
    for a in doc.get("attributes", []):
        name = base = f"sdr_{_slug(a)}"
        n = 1
        while name in used:  # 'a b' and 'a_b' slug alike; neither figure may overwrite the other
            n += 1
            name = f"{base}_{n}"
        used.add(name)
        figs.append((name, sdr_curves(doc, attribute=a)))
    if (doc.get("curves") or {}).get("records"):
        from fairlandmark.render.curves import error_curves_figure, extra_curve_figure

        for a in [a for a in doc.get("attributes", []) if extra_curve_figure(doc, a)]:
            name = base = f"curves_{_slug(a)}"
            n = 1
            while name in used:
                n += 1
                name = f"{base}_{n}"
            used.add(name)
            figs.append((name, error_curves_figure(doc, attribute=a)))
    if (doc.get("anatomy") or {}).get("mean_shape"):
        from fairlandmark.render.fairness_map import fairness_map

        figs.append(("fairness_map", fairness_map(doc)))
    if baseline is not None:
        figs.append(("compare", compare_bars(baseline, doc, labels=labels)))
    paths = []
    for name, fig in figs:
        for fmt in formats:
            paths.append(save_figure(fig, os.path.join(os.fspath(folder), f"{name}.{fmt}"), dpi=dpi))
    return paths
