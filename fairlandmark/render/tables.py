"""Terminal tables that fit the width: columns are never cut, tables are split instead.

A wide table (one column per group, then DP, pair, chance DP, interval and
p-values) does not fit an 80-column terminal, and rich would then shorten cells
to ``0.1…``. :func:`fit_tables` measures every column and packs the columns
into as few tables as fit the console's width, repeating the key columns
(keypoint, family) in each, so every number is shown whole and every row keeps
its keypoint. Cells are :class:`rich.text.Text` (or plain strings shown as
text), so user text is never read as markup.

Examples
--------
>>> from rich.console import Console
>>> cols = [TextColumn("kp", ["1", "2"]), TextColumn("value A", ["0.123", "0.456"]),
...         TextColumn("value B", ["0.789", "0.012"])]
>>> [len(t.columns) for t in fit_tables("demo", cols[:1], cols[1:], width=24)]
[2, 2]
>>> [len(t.columns) for t in fit_tables("demo", cols[:1], cols[1:], width=80)]
[3]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

__all__ = ["TextColumn", "fit_tables", "table_width", "plain_table"]

CELL_PAD = 2  # rich's default padding: one space either side
BORDER = 1  # one vertical rule between (and around) columns


@dataclass
class TextColumn:
    """A column's header, its cells (str or Text) and its justification."""

    header: str
    cells: Sequence[str | Text]
    justify: str = "right"
    styles: Sequence[str] = field(default_factory=tuple)
    optional: bool = False  # left out (and named in the caption) when keeping it would need more tables

    def width(self) -> int:
        """Cells needed to show the header and every cell without wrapping."""
        lines = [cell_len(line) for line in self.header.split("\n")]
        lines += [cell_len(c.plain if isinstance(c, Text) else str(c)) for c in self.cells]
        return max(lines, default=0)

    def cell(self, i: int) -> Text:
        c = self.cells[i]
        text = c if isinstance(c, Text) else Text(str(c))
        if self.styles and self.styles[i]:
            text = text.copy()
            text.stylize(self.styles[i])
        return text


def table_width(columns: Sequence[TextColumn]) -> int:
    """Width of a boxed rich table showing ``columns`` unwrapped."""
    return sum(c.width() + CELL_PAD + BORDER for c in columns) + BORDER


def plain_table(title: str | Text | None, columns: Sequence[TextColumn], caption: str | None = None) -> Table:
    """A rich Table of ``columns``: header bold, columns never wrapped nor cut."""
    table = Table(title=title, caption=caption, header_style="bold", title_justify="left",
                  caption_justify="left")
    for c in columns:
        table.add_column(Text(c.header), justify=c.justify, no_wrap=True, overflow="fold",  # type: ignore[arg-type]
                         min_width=c.width())
    n = max((len(c.cells) for c in columns), default=0)
    for i in range(n):
        table.add_row(*[c.cell(i) for c in columns])
    return table


def _pack(key: Sequence[TextColumn], rest_key: Sequence[TextColumn], columns: Sequence[TextColumn],
          width: int) -> list[list[TextColumn]]:
    groups: list[list[TextColumn]] = []
    current: list[TextColumn] = []
    for col in columns:
        if current and table_width([*(rest_key if groups else key), *current, col]) > width:
            groups.append(current)
            current = []
        current.append(col)
    if current or not groups:
        groups.append(current)
    return groups


def fit_tables(title: str, key: Sequence[TextColumn], columns: Sequence[TextColumn], *, width: int,
               caption: str | None = None, continuation_key: Sequence[TextColumn] | None = None,
               max_tables: int = 2, short_title: str | None = None) -> list[Table]:
    """Pack ``columns`` into as few tables as fit ``width``, each starting with the key columns.

    Parameters
    ----------
    title : str
        Title of the first table; later ones are numbered.
    key : sequence of TextColumn
        Columns that start the first table (e.g. keypoint and family).
    columns : sequence of TextColumn
        The rest, in order; a column is never split across tables.
    width : int
        Console width in cells.
    caption : str, optional
        Shown under the last table.
    continuation_key : sequence of TextColumn, optional
        Columns that start every later table (default ``key``), so each row
        stays identified.
    max_tables : int, default 2
        When more tables than this would be needed, optional columns are left
        out (and named in the caption) if that saves a table.
    short_title : str, optional
        Title of the continuation tables (default ``title``), numbered.

    Returns
    -------
    list of rich.table.Table
        One table when everything fits; a column wider than the width on its
        own still gets a table of its own (the terminal then wraps lines, but
        no cell is shortened).
    """
    rest_key = key if continuation_key is None else continuation_key
    groups = _pack(key, rest_key, columns, width)
    dropped: list[str] = []
    if len(groups) > max_tables and any(c.optional for c in columns):
        kept = [c for c in columns if not c.optional]
        fewer = _pack(key, rest_key, kept, width)
        if len(fewer) < len(groups):
            groups = fewer
            dropped = [c.header.replace("\n", " ") for c in columns if c.optional]
    if dropped:
        note = f"Not shown at this width: {', '.join(dropped)} (in the JSON and CSV outputs)."
        caption = f"{caption} {note}" if caption else note
    tables = []
    for i, cols in enumerate(groups):
        if len(groups) == 1:
            name = title
        elif i == 0:
            name = f"{title} (1/{len(groups)})"
        else:
            name = f"{short_title or title} (continued, {i + 1}/{len(groups)})"
        tables.append(plain_table(Text(name, style="bold"), [*(rest_key if i else key), *cols],
                                  caption=caption if i == len(groups) - 1 else None))
    return tables
