"""Matplotlib basics shared by the figure modules: the optional import, a fresh Agg figure, the palette.

Kept apart so that :mod:`fairlandmark.render.figures`, :mod:`fairlandmark.render.curves` and
:mod:`fairlandmark.render.fairness_map` share them without importing one another in a cycle.
matplotlib is imported only when a figure is made.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

from fairlandmark.exceptions import InputError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["MissingExtraError", "require_matplotlib", "new_figure", "figure_legend", "open_axes", "FAMILY_COLOURS",
           "MSG_NO_MATPLOTLIB", "LegendPlace"]

LegendPlace = Literal["outside right upper", "outside lower center"]

MSG_NO_MATPLOTLIB = ("figures need matplotlib, which is not installed: pip install 'fairlandmark[report]' "
                     "(or leave figures out, e.g. report --no-figures)")

FAMILY_COLOURS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C",
                  "#CCB974", "#64B5CD"]


class MissingExtraError(InputError):
    """An optional dependency (the ``[report]`` extra) is missing."""


def require_matplotlib() -> None:
    """Import matplotlib with the Agg canvas, or raise one clear line."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError:
        raise MissingExtraError(MSG_NO_MATPLOTLIB) from None


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure on its own Agg canvas (pyplot is never used)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_legend(fig: Figure, axes: Iterable[Axes], *, title: str | None = None,
                  loc: LegendPlace = "outside right upper", ncols: int | None = 1) -> None:
    """One legend for the whole figure, outside the axes (on the right by default), each label once;
    ``ncols=None`` puts every entry in one row."""
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, fontsize=8, loc=loc, frameon=False, title=title, title_fontsize=8,
                   ncols=len(handles) if ncols is None else ncols)


def open_axes(ax: Axes) -> None:
    """The house style of a panel: no top or right spine."""
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
