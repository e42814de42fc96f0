"""How commands print: a table for people, JSON for programs.

Every listing command takes the same ``--output/-o`` option and prints its
table the same way, so their outputs line up and scripts parse them alike.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def add_output_option(parser: argparse.ArgumentParser, *, human: str = "table") -> None:
    """``--output/-o {human,json}``, default ``human``: "table" for listings, "text" for reports."""
    parser.add_argument(
        "--output",
        "-o",
        choices=(human, "json"),
        default=human,
        help=f"output format (default: {human})",
    )


def table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; the first row is the header."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
