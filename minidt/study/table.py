"""A study's one table: our numbers (mean ± spread over seeds) beside the paper's, as text for the terminal and
as Markdown for the book.

The spread is the sample standard deviation over seeds (n - 1 in the denominator): how much a result moves from
one training seed to the next, not how well the mean is known (that is spread / sqrt(n), the standard error).
Each seed's number is itself a mean over evaluation episodes.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

DASH = "–"  # an empty cell: nothing measured (ours) or nothing reported (the paper's)
WIDTH = 88  # the book's code column


def mean_spread(values: Sequence[float]) -> dict:
    """{"mean", "spread" (sample std, n - 1; None for one value), "n", "values"} of one cell's per-seed values."""
    x = np.asarray(values, np.float64)
    if x.size == 0:
        return {"mean": None, "spread": None, "n": 0, "values": []}
    return {"mean": float(x.mean()), "spread": float(x.std(ddof=1)) if x.size > 1 else None, "n": int(x.size),
            "values": [float(v) for v in x]}


def fmt(cell: "dict | float | str | None", digits: int = 1) -> str:
    """A cell as text: "45.9 ± 7.3" (a mean_spread dict), "45.9" (one value, or a number), the string itself,
    or "–" (None: nothing there)."""
    if cell is None:
        return DASH
    if isinstance(cell, str):
        return cell
    if isinstance(cell, dict):
        if cell["mean"] is None:
            return DASH
        spread = "" if cell["spread"] is None else f" ± {cell['spread']:.{digits}f}"
        return f"{cell['mean']:.{digits}f}{spread}"
    return DASH if math.isnan(cell) else f"{cell:.{digits}f}"


@dataclass
class Table:
    """One row per policy or setting (its name first); `columns` are the headers after the row names' (a "\\n"
    splits a header over two lines); every cell is already text (`fmt`). `caption` says what the numbers are."""

    title: str
    row_header: str
    columns: list[str]
    rows: list[tuple[str, list[str]]]
    caption: str
    cells: dict = field(default_factory=dict)  # the numbers behind the text: {row: {column: mean_spread}}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Table":
        return cls(d["title"], d["row_header"], list(d["columns"]), [(r, list(c)) for r, c in d["rows"]],
                   d["caption"], d.get("cells", {}))

    def text(self) -> str:
        """The table for a terminal (and the book's code column): aligned columns, the caption wrapped."""
        headers = [self.row_header.split("\n"), *(c.split("\n") for c in self.columns)]
        depth = max(len(h) for h in headers)
        headers = [[""] * (depth - len(h)) + h for h in headers]
        grid = [[name, *cells] for name, cells in self.rows]
        widths = [max([len(x) for x in headers[j]] + [len(r[j]) for r in grid]) for j in range(len(headers))]

        def line(parts: list[str]) -> str:
            first = parts[0].ljust(widths[0])
            return "  ".join([first, *(p.rjust(w) for p, w in zip(parts[1:], widths[1:]))]).rstrip()

        out = [self.title, *(line([h[i] for h in headers]) for i in range(depth)),
               "  ".join("-" * w for w in widths)]
        out += [line(r) for r in grid]
        out += textwrap.wrap(self.caption, WIDTH)
        return "\n".join(out)

    def markdown(self) -> str:
        """The table in Markdown (headers on one line), the caption under it in italics."""
        head = [self.row_header, *self.columns]
        lines = ["| " + " | ".join(h.replace("\n", " ") for h in head) + " |",
                 "|---|" + "---:|" * len(self.columns)]
        lines += ["| " + " | ".join([name, *cells]) + " |" for name, cells in self.rows]
        return "\n".join(lines) + f"\n\n*{self.caption}*\n"
