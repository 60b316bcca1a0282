"""Jinja2 templates of the HTML report and comparison, shipped in ``fairlandmark/render/templates``.

Autoescape is on for every template: every value a template prints is
escaped unless it is marked safe here, so group names, keypoint names, titles
and paths from the user are shown as text, never interpreted as HTML or as
template syntax (a group named ``{{ 7*7 }}`` prints as it is). Numbers are
formatted in Python before they reach a template; templates only lay out.

Examples
--------
>>> table = HtmlTable(["group", "n"], [["<F>", "3"]])
>>> macros = environment().get_template("macros.html.j2").module
>>> str(macros.table(table)).splitlines()[1]
'<tr><td class="l">&lt;F&gt;</td><td class="">3</td></tr>'
>>> render_template("compare.html.j2", comparison={"summary": table, "accuracy": table, "unit": "{{ 7*7 }}",
...                                                 "changes": None, "notes": []}).count("{{ 7*7 }}")
1
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2

__all__ = ["HtmlTable", "environment", "render_template"]


@dataclass(frozen=True)
class HtmlTable:
    """A table as the templates lay it out: text cells, the first ``left`` columns left-aligned.

    Parameters
    ----------
    header : sequence of str
        Column names.
    rows : sequence of sequence
        Cell values (printed with ``str`` and escaped by the template).
    left : int, default 1
        Number of leading columns aligned left (labels); the rest are numbers.
    row_classes : sequence of str, optional
        CSS class of each row (``"sig"`` marks significant rows); ``""`` for none.
    cell_styles : sequence of sequence of str, optional
        Inline CSS of each cell (the DP heat colour); ``""`` for none.
    """

    header: Sequence[Any]
    rows: Sequence[Sequence[Any]]
    left: int = 1
    row_classes: Sequence[str] | None = None
    cell_styles: Sequence[Sequence[str]] | None = None


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The Jinja2 environment of the package templates (autoescape on, undefined names are errors).

    Returns
    -------
    jinja2.Environment
    """
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("fairlandmark.render", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_template(name: str, **context: Any) -> str:
    """Render the package template ``name`` with ``context``.

    Parameters
    ----------
    name : str
        File name under ``fairlandmark/render/templates`` (e.g. ``"report.html.j2"``).
    **context
        The template's variables.

    Returns
    -------
    str
    """
    return environment().get_template(name).render(**context)
