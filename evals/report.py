"""Text tables in NeMo-Skills' layout, one per benchmark."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evals.metrics import published_modes

__all__ = ["COLUMNS", "format_table", "format_report", "published_modes"]

COLUMNS = ("evaluation_mode", "num_entries", "avg_tokens", "gen_seconds", "symbolic_correct", "no_answer")


def _correct_cell(row: Mapping[str, Any]) -> str:
    """``96.46%``, or ``96.46% ± 2.50%`` where the row has the spread across runs (as NeMo-Skills prints it)."""
    cell = f"{row['symbolic_correct']:.2f}%"
    stats = row.get("symbolic_correct_statistics")
    if isinstance(stats, Mapping) and stats.get("std_dev_across_runs") is not None:
        cell += f" ± {100.0 * stats['std_dev_across_runs']:.2f}%"
    return cell


def _cells(mode: str, row: Mapping[str, Any]) -> list[str]:
    return [
        mode,
        str(int(row["num_entries"])),
        str(int(row["avg_tokens"])),
        str(int(row["gen_seconds"])),
        _correct_cell(row),
        f"{row['no_answer']:.2f}%",
    ]


def format_table(benchmark: str, modes: Mapping[str, Mapping[str, Any]]) -> str:
    """One benchmark's table::

    ------------------------------ aime24 ------------------------------
    evaluation_mode   | num_entries | ... | symbolic_correct | no_answer
    pass@1[avg-of-16] | 30          | ... | 96.46% ± 2.50%   | 0.42%
    """
    rows = [list(COLUMNS)] + [_cells(mode, row) for mode, row in modes.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    width = sum(widths) + 3 * (len(widths) - 1)
    return "\n".join([f" {benchmark} ".center(width, "-"), *lines])


def format_report(metrics: Mapping[str, Mapping[str, Mapping[str, Any]]], full: bool = False) -> str:
    """All benchmarks' tables, separated by blank lines: the published rows, or every k when ``full``."""
    return "\n\n".join(
        format_table(bench, modes if full else published_modes(modes)) for bench, modes in metrics.items() if modes
    )
