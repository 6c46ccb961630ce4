"""Text tables in the published layout, one per benchmark."""
from __future__ import annotations

from typing import Any, Mapping

__all__ = ["COLUMNS", "format_table", "format_report", "published_modes"]

COLUMNS = ("evaluation_mode", "num_entries", "avg_tokens", "gen_seconds", "symbolic_correct", "no_answer")


def _cells(mode: str, row: Mapping[str, Any]) -> list[str]:
    return [
        mode,
        str(row["num_entries"]),
        str(int(round(row["avg_tokens"]))),
        str(int(round(row["gen_seconds"]))),
        f"{row['symbolic_correct']:.2f}%",
        f"{row['no_answer']:.2f}%",
    ]


def format_table(benchmark: str, modes: Mapping[str, Mapping[str, Any]]) -> str:
    """One benchmark's table::

        ------------------ aime24 ------------------
        evaluation_mode   | num_entries | ... | no_answer
        pass@1[avg-of-16] | 30          | ... | 0.42%

    followed by the spread across runs of the largest pass@1[avg-of-k].
    """
    rows = [list(COLUMNS)] + [_cells(mode, row) for mode, row in modes.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    width = max(len(line) for line in lines)
    title = f" {benchmark} ".center(width, "-")
    out = [title, *lines]
    spread = [(m, r) for m, r in modes.items() if "symbolic_correct_std_across_runs" in r]
    if spread:
        mode, row = spread[-1]
        out.append(f"{mode}: std of per-run accuracy across {row['num_runs']} runs = "
                   f"{row['symbolic_correct_std_across_runs']:.2f} points")
    return "\n".join(out)


def published_modes(modes: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The rows of the published table: pass@1[avg-of-k], majority@k and pass@k for the largest k."""
    ks = [int(m.split("@")[1]) for m in modes if m.startswith("majority@")]
    if not ks:
        return dict(modes)
    k = max(ks)
    wanted = (f"pass@1[avg-of-{k}]", f"majority@{k}", f"pass@{k}")
    return {m: modes[m] for m in wanted if m in modes}


def format_report(metrics: Mapping[str, Mapping[str, Mapping[str, Any]]], full: bool = False) -> str:
    """All benchmarks' tables, separated by blank lines: the published rows, or every k when ``full``."""
    return "\n\n".join(format_table(bench, modes if full else published_modes(modes))
                        for bench, modes in metrics.items() if modes)
