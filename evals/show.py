"""``harmony-eval show DIR --id ID --seed S``: render one saved sample as ``print(result)`` does; without
``--id``, list the samples (id, seed, answer, grade, finish, tokens, calls).

DIR is an output dir, its eval-results folder, one benchmark folder, or a harmony-generate output dir.
On a terminal the sample is drawn with rich (highlighted code); redirected, it is plain text.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evals.errors import EvalError
from evals.metrics import seed_order
from evals.output import SampleStore, seed_files
from evals.summarize import benchmark_folders
from harmony_agent.render import render_rich, render_text

__all__ = ["main", "find_samples", "list_lines"]


def find_samples(path: str | Path, benchmark: str | None = None) -> list[tuple[str, int, dict]]:
    """``(benchmark, seed, record)`` of every saved sample under `path` (one benchmark when given)."""
    folders = benchmark_folders(path)
    if benchmark is not None:
        folders = [f for f in folders if f.name == benchmark]
        if not folders:
            names = ", ".join(f.name for f in benchmark_folders(path))
            raise EvalError(f"no benchmark {benchmark!r} under {path} (there: {names}); fix --benchmark")
    out = []
    for folder in folders:
        store = SampleStore(folder)
        for seed in sorted(seed_files(folder), key=seed_order):
            out += [(folder.name, seed, rec) for rec in store.records(seed)]
    return out


def list_lines(samples: Sequence[tuple[str, int, dict]]) -> list[str]:
    """One aligned line per sample."""
    rows = [("benchmark", "id", "seed", "answer", "grade", "finish", "tokens", "calls")]
    for bench, seed, rec in samples:
        grade = "" if "symbolic_correct" not in rec else ("right" if rec["symbolic_correct"] else "wrong")
        answer = rec.get("predicted_answer")
        rows.append(
            (
                bench,
                str(rec.get("id")),
                str(seed),
                "-" if answer is None else str(answer)[:30],
                grade,
                str(rec.get("finish_reason")),
                str(rec.get("num_generated_tokens", "")),
                str(rec.get("code_rounds_executed", "")),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def main(argv: Sequence[str]) -> int:
    from evals.cli import Parser

    p = Parser(
        prog="harmony-eval show",
        description="Render a saved sample readably (analysis, each python call "
        "and its output, the final answer, tokens, time); without --id, list the samples.",
    )
    p.add_argument("path", help="output dir, eval-results folder, benchmark folder or harmony-generate output dir")
    p.add_argument("--id", help="the sample's problem id (see the listing)")
    p.add_argument("--seed", type=int, help="which sample of that problem (default: the lowest seed)")
    p.add_argument("--benchmark", help="which benchmark, when the output dir holds several")
    p.add_argument("--plain", action="store_true", help="plain text even on a terminal")
    a = p.parse_args(argv)
    samples = find_samples(a.path, a.benchmark)
    if a.seed is not None:
        samples = [s for s in samples if s[1] == a.seed]
    if a.id is None:
        print("\n".join(list_lines(samples)))
        return 0
    found = [s for s in samples if str(s[2].get("id")) == a.id]
    if not found:
        seeds = f" and seed {a.seed}" if a.seed is not None else ""
        raise EvalError(f"no sample with id {a.id!r}{seeds} under {a.path}; run without --id to list them")
    benches = sorted({b for b, _s, _r in found})
    if len(benches) > 1:
        raise EvalError(f"id {a.id!r} is in several benchmarks ({', '.join(benches)}); pick one with --benchmark")
    _bench, _seed, rec = min(found, key=lambda s: s[1])
    _print(rec, plain=a.plain or not sys.stdout.isatty())
    return 0


def _print(rec: dict[str, Any], plain: bool) -> None:
    if plain:
        print(render_text(rec))
        return
    from rich.console import Console

    Console().print(render_rich(rec))
