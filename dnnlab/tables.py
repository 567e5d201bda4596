"""How numbers, counts and tables are shown in a terminal: tables designed for 80 columns.

A table is a list of `Column`s, each holding every row's cell twice: abbreviated for the terminal
(3 significant digits, a mean over seeds with its spread as `0.962±.004`) and uncut (`--wide`, the
Markdown files). `render` folds the columns whose value is the same in every row into a line
above the table ("all: model.depth=10, optimizer.name=sgd"), drops the columns that do not fit
the width, least important first, and says below the table what was left out and where to see
it. Columns marked `keep` (the verdict, the remedy) are never dropped and never cut: a cell that
is too long wraps between its words. compare, sweep and fix draw their tables here.

Imports nothing of dnnlab at import time, and Rich only where it renders.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

SIGNIFICANT = 3  # the digits a number keeps in a terminal table
WRAP_FLOOR = 16  # the narrowest a column of words is made before columns are dropped instead


def count(n: int, noun: str, plural: Optional[str] = None) -> str:
    """`1 member`, `2 members`, `3 remedies` (with `plural`): a count and its noun, agreed."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def _decimals(value: float, digits: int = SIGNIFICANT) -> int:
    """The decimals that show `value` to `digits` significant digits (after rounding: 0.9996 is 1.00)."""
    if value == 0:
        return digits - 1
    exp = math.floor(math.log10(abs(value)))
    rounded = round(value, digits - 1 - exp)
    if rounded != 0:
        exp = math.floor(math.log10(abs(rounded)))
    return max(digits - 1 - exp, 0)


def number(value: Any, digits: int = SIGNIFICANT) -> str:
    """A metric in a terminal table: 3 significant digits (`0.962`, `1.00`, `12.3`, `0.000123`);
    integers and numbers of 1,000 or more as whole numbers; `-` for a missing one."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    if abs(value) >= 1e6 or abs(value) < 1e-4:
        return f"{value:.{digits - 1}e}"
    if abs(value) >= 10 ** digits:
        return f"{value:.0f}"
    return f"{value:.{_decimals(value, digits)}f}"


def _trimmed(text: str) -> str:
    """`.004` for `0.004`: a spread or a change, read next to its number."""
    return text[1:] if text.startswith("0.") else text


def spread(value: float, like: Any) -> str:
    """A standard deviation or a change at the decimals of the number it goes with (`like`)."""
    if not isinstance(like, (int, float)) or isinstance(like, bool) or not math.isfinite(like) or like == 0:
        return _trimmed(number(abs(value)))
    if abs(like) >= 1e6 or abs(like) < 1e-4:
        return f"{abs(value):.{SIGNIFICANT - 1}e}"
    decimals = 0 if abs(like) >= 10 ** SIGNIFICANT else _decimals(like)
    return _trimmed(f"{abs(value):.{decimals}f}")


def mean_std(mean: Optional[float], std: float, seeds: int) -> str:
    """A seed group's mean and standard deviation in one cell: `0.962±.004` (one seed: `0.962`)."""
    if mean is None:
        return "-"
    return f"{number(mean)}±{spread(std, mean)}" if seeds > 1 else number(mean)


def change(value: Optional[float], control: Optional[float], noise: bool = False) -> str:
    """A value and its change from the control: `0.998 +.886`; `*` marks a change within the noise."""
    if value is None:
        return "-"
    if control is None:
        return number(value)
    d = value - control
    return f"{number(value)} {'-' if d < 0 else '+'}{spread(d, value)}{'*' if noise else ''}"


@dataclass
class Column:
    """One column of a terminal table.

    `cells` are the abbreviated cells, `full` the uncut ones (`--wide`; default: `cells`).
    `keep`: never dropped (the rows' names, the verdict, the remedy); `fold`: shown as
    `fold_as.format(value)` in the line above the table when every row holds the same value;
    `wrap`: a cell of words that may wrap between them; `priority`: the columns that do not fit
    are dropped lowest first (the rightmost of equals first); `right`: right-justified (numbers).
    """

    header: str
    cells: list[str]
    full: Optional[list[str]] = None
    keep: bool = False
    fold: bool = False
    fold_as: Optional[str] = None
    wrap: bool = False
    priority: int = 0
    right: bool = False

    def uncut(self) -> list[str]:
        return self.full if self.full is not None else self.cells


@dataclass
class Rendered:
    """What `render` made: the renderables to print in order, the width to print them at (the
    table's own under `--wide`, else None: the console's), and what was folded and dropped."""

    renderables: list[Any]
    width: Optional[int] = None
    folded: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def _constant(column: Column, rows: Sequence[int]) -> Optional[str]:
    values = {column.cells[i] for i in rows}
    return next(iter(values)) if len(rows) > 1 and len(values) == 1 else None


def _natural(column: Column, cells: Sequence[str]) -> int:
    """The column's width with every cell and the header on one line."""
    from rich.cells import cell_len

    return max(cell_len(x) for x in [column.header, *cells])


def _floor(column: Column, rows: Sequence[int]) -> int:
    """The narrowest the column may be: its longest cell on one line or, for words, its longest
    word (but WRAP_FLOOR, or its longest cell when shorter); a header wraps between its words, and
    a loose row's cell too."""
    from rich.cells import cell_len

    strict = [column.cells[i] for i in rows]
    words = [w for c in [column.header, *column.cells] for w in c.split()]
    floor = max([cell_len(w) for w in words] or [0])
    if not column.wrap:
        return max([floor, *(cell_len(c) for c in strict)])
    longest = max([cell_len(c) for c in strict] or [0])
    return max(floor, min(longest, WRAP_FLOOR))


GAP = 3  # between two columns: a space of padding on each side of the (blank) rule


def _widths(columns: list[Column], rows: Sequence[int], width: int) -> Optional[list[int]]:
    """Each column's width within `width` (the gaps between them included): every one at its
    natural width if they fit, else the widest of the columns of words narrowed, one character
    at a time, down to their floors; None when the floors alone are too wide."""
    floors = [_floor(c, rows) for c in columns]
    widths = [max(f, _natural(c, c.cells)) for c, f in zip(columns, floors)]
    room = width - GAP * (len(columns) - 1)
    if sum(floors) > room:
        return None
    while sum(widths) > room:
        i = max((i for i in range(len(columns)) if widths[i] > floors[i]), key=lambda i: widths[i] - floors[i] / 1000)
        widths[i] -= 1
    # a narrowed column keeps only what its wrapped lines use; what that frees goes to the column
    # it saves the most lines of
    widths = [_wrapped(c, w)[0] if w < _natural(c, c.cells) else w for c, w in zip(columns, widths)]
    while (slack := room - sum(widths)) > 0:
        saved = {i: _wrapped(c, widths[i])[1] - _wrapped(c, widths[i] + slack)[1]
                 for i, c in enumerate(columns) if widths[i] < _natural(c, c.cells)}
        best = max(saved, key=lambda i: saved[i], default=None)
        if best is None or saved[best] <= 0:
            break
        widths[best] = _wrapped(columns[best], widths[best] + slack)[0]
    return widths


def _wrapped(column: Column, width: int) -> tuple[int, int]:
    """(the longest line, the lines) of the column's header and cells wrapped between words at `width`."""
    from rich.cells import cell_len

    longest = lines = 0
    for text in [column.header, *column.cells]:
        line = 0
        lines += 1
        for word in text.split():
            n = cell_len(word)
            if line and line + 1 + n > width:
                lines, line = lines + 1, n
            else:
                line = n if line == 0 else line + 1 + n
            longest = max(longest, min(line, width))
    return longest, lines


def _table(columns: list[Column], cells: list[list[str]], widths: Optional[list[int]], caption: str) -> Any:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from dnnlab.console import (
        visible,  # the cells come from configs and data: shown, never obeyed
    )

    table = Table(
        caption=Text(visible(caption)) if caption else None,
        box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, caption_justify="left",
    )
    for i, c in enumerate(columns):
        table.add_column(Text(visible(c.header)), justify="right" if c.right else "left", overflow="fold",
                         width=widths[i] if widths else None, no_wrap=widths is None)
    for row in zip(*cells):
        table.add_row(*(Text(visible(x)) for x in row))
    return table


def render(
    columns: list[Column], width: int, *, title: str = "", caption: str = "", wide: bool = False,
    sources: Sequence[str] = ("--json",), loose_rows: Sequence[int] = (),
) -> Rendered:
    """A table that fits `width` columns (or, `wide`, every column with uncut cells at its own
    width), the line of folded columns above it, and below it the line that says what was left
    out and where every column and digit is (`sources`: `--json`, a compare.md).

    `loose_rows`: rows that neither fold a column nor widen one (a reference row)."""
    from rich.text import Text

    from dnnlab.console import visible

    rows = len(columns[0].cells) if columns else 0
    strict = [i for i in range(rows) if i not in set(loose_rows)]
    head = [Text(visible(title))] if title else []
    if wide:
        natural = sum(_natural(c, c.uncut()) for c in columns) + GAP * (len(columns) - 1)
        table = _table(columns, [c.uncut() for c in columns], None, caption)
        return Rendered([*head, table], width=max(natural, len(title), len(caption)))
    folded, shown = [], []
    for c in columns:
        value = _constant(c, strict) if c.fold else None
        if value is None:
            shown.append(c)
        else:
            folded.append((c.fold_as or f"{c.header}={{}}").format(value))
    dropped: list[Column] = []
    while (widths := _widths(shown, strict, width)) is None:
        optional = [c for c in shown if not c.keep]
        if not optional:
            break  # the kept columns alone are wider: Rich wraps them (overflow "fold"), never cuts
        lowest = min(c.priority for c in optional)
        worst = [c for c in optional if c.priority == lowest][-1]
        shown.remove(worst)
        dropped.append(worst)
    table = _table(shown, [c.cells for c in shown], widths, caption)
    dropped.sort(key=columns.index)
    out: list[Any] = head
    if folded:
        out.append(Text(visible("all: " + ", ".join(folded))))
    out.append(table)
    where = ", ".join(sources)
    rest = (f"not shown at {width} columns: {', '.join(c.header for c in dropped)}; every column and digit: --wide, {where}"
            if dropped else f"every digit: --wide, {where}")
    out.append(Text(visible(rest)))
    return Rendered(out, folded=folded, dropped=[c.header for c in dropped])
