"""Figure of a power plan: minimal detectable DP against images per group.

matplotlib is imported inside the function (the ``[report]`` extra); the
figure is drawn on the Agg canvas without pyplot, as in
:mod:`fairlandmark.render.figures`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["detectable_dp_figure"]

_COLOURS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860"]


def detectable_dp_figure(curve: pd.DataFrame, plan: Any = None, *, target_dp: float | None = None) -> Any:
    """Minimal detectable DP against images per group, one line per attribute.

    Parameters
    ----------
    curve : pandas.DataFrame
        From :func:`fairlandmark.stats.power.detectable_curve`: per attribute,
        the curves at the lowest, median and highest keypoint SDR.
    plan : PlanResult, optional
        Marks the study's own design (smallest group in the planted pair,
        median MDD over keypoints).
    target_dp : float, optional
        Draws the target gap as a horizontal line.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> from fairlandmark.stats.power import plan_from_assumptions, detectable_curve
    >>> plan = plan_from_assumptions([0.7, 0.9], {"F": 100, "M": 100}, target_dp=0.1, n_sim=200)
    >>> fig = detectable_dp_figure(detectable_curve(plan, [50, 200], n_sim=200), plan, target_dp=0.1)
    >>> len(fig.axes)
    1
    """
    from fairlandmark.render.figures import require_matplotlib

    require_matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for i, (attribute, frame) in enumerate(curve.groupby("attribute", sort=False)):
        colour = _COLOURS[i % len(_COLOURS)]
        mid = frame[frame["which"] == "median SDR"].sort_values("n_per_group")
        low = frame[frame["which"] == "lowest SDR"].sort_values("n_per_group")
        high = frame[frame["which"] == "highest SDR"].sort_values("n_per_group")
        ax.plot(mid["n_per_group"], mid["min_detectable_dp"], color=colour, lw=2,
                label=f"{attribute} (median keypoint SDR {mid['sdr'].iloc[0]:.2f})")
        both = np.vstack([low["min_detectable_dp"].to_numpy(), high["min_detectable_dp"].to_numpy()])
        ax.fill_between(mid["n_per_group"], np.nanmin(both, axis=0), np.nanmax(both, axis=0), color=colour,
                        alpha=0.15, lw=0)
        if plan is not None and attribute in getattr(plan, "designs", {}):
            design = plan.designs[attribute]
            sizes = design.sizes.max(axis=0) if design.shared_images else design.sizes.sum(axis=0)
            n_study = float(np.sort(sizes)[0])
            rows = plan.table[plan.table["attribute"] == attribute]
            ax.plot([n_study], [float(np.nanmedian(rows["min_detectable_dp"]))], "o", color=colour, ms=7,
                    markeredgecolor="black")
    if target_dp is not None:
        ax.axhline(target_dp, color="#555555", ls="--", lw=1, label=f"target DP {target_dp:g}")
    ax.set_xscale("log")
    ax.set_xlabel("test images per group")
    ax.set_ylabel("minimal detectable DP")
    ax.set_ylim(0, min(1.0, float(np.nanmax(curve["min_detectable_dp"])) * 1.1 if len(curve) else 1.0))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    ax.set_title("Smallest SDR gap flagged with the planned power\n(band: lowest to highest keypoint SDR; "
                 "dot: this study)", fontsize=9)
    return fig
