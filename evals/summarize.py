"""Metrics of benchmark folders from their output files (``harmony-eval summarize`` and the end of a run).

A folder is scored on its complete seeds: the ``output-rs<seed>.jsonl`` files that hold every problem. When
some seed is incomplete (an unfinished run, or seeds of unequal length) the metrics use the complete ones and a
warning says which seeds were left out and what k that gives, instead of silently scoring a smaller k.
NeMo-Skills' own summarizer cannot read such a folder at all (it pairs the files line by line).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evals.errors import EvalError
from evals.metrics import compute_metrics, seed_order
from evals.output import SampleStore, seed_files, write_json_atomic

__all__ = ["benchmark_folders", "score_folder", "summarize"]

logger = logging.getLogger(__name__)

Metrics = dict[str, dict[str, Any]]


def benchmark_folders(path: str | Path) -> list[Path]:
    """The benchmark folders under `path`: an output dir (``<path>/eval-results/<bench>``), an ``eval-results``
    folder (``<path>/<bench>``) or one benchmark folder (holding ``output-rs*.jsonl`` itself)."""
    base = Path(path)
    if not base.is_dir():
        raise EvalError(
            f"{base} is not a folder; give the --output-dir of a harmony-eval run, its eval-results "
            "folder, or one benchmark folder"
        )
    if seed_files(base):
        return [base]
    root = base / "eval-results" if (base / "eval-results").is_dir() else base
    found = sorted(d for d in root.iterdir() if d.is_dir() and seed_files(d))
    if not found:
        raise EvalError(
            f"no output-rs*.jsonl files under {base}; give the --output-dir of a harmony-eval run, "
            "its eval-results folder, or one benchmark folder"
        )
    return found


def score_folder(
    folder: Path, ids: Sequence[str] | None = None, majority: str = "normalized", write: bool = True
) -> Metrics:
    """Metrics of one benchmark folder over its complete seeds (problems `ids`, default: every id in the
    files); written to ``metrics.json`` as ``{bench: {mode: row}}`` when `write`."""
    store = SampleStore(folder)
    per_seed = {seed: store.records(seed) for seed in seed_files(folder)}
    problems = (
        list(ids)
        if ids is not None
        else list(dict.fromkeys(str(r.get("id")) for recs in per_seed.values() for r in recs))
    )
    wanted = set(problems)
    complete: list[tuple[int, int]] = []
    partial: list[tuple[int, int]] = []
    for seed, recs in per_seed.items():
        have = {str(r.get("id")) for r in recs} & wanted
        (complete if have == wanted else partial).append((seed, len(have)))
    if not complete:
        raise EvalError(
            f"{folder}: no output-rs*.jsonl holds all {len(wanted)} problems "
            f"({', '.join(f'rs{s}: {c}' for s, c in partial)}); finish the run (run the same "
            "harmony-eval command again) before summarizing"
        )
    if partial:
        logger.warning(
            "%s: %d of %d seeds are incomplete (%s of %d problems); the metrics use the %d complete "
            "seeds (k up to %d), and NeMo-Skills cannot read this folder; run the same command again to "
            "finish them",
            folder.name,
            len(partial),
            len(per_seed),
            ", ".join(f"rs{s}: {c}" for s, c in partial),
            len(wanted),
            len(complete),
            len(complete),
        )
    orders = {tuple(str(r.get("id")) for r in per_seed[s]) for s, _c in complete}
    if len(orders) > 1:
        logger.warning(
            "%s: the output-rs*.jsonl files list the problems in different orders, so NeMo-Skills "
            "would pair the wrong samples (our metrics pair them by id); run the same harmony-eval "
            "command again to put them in input order",
            folder.name,
        )
    seeds = sorted((s for s, _c in complete), key=seed_order)
    records = [{**r, "seed": s} for s in seeds for r in per_seed[s] if str(r.get("id")) in wanted]
    modes = compute_metrics(records, majority=majority)
    if write:
        write_json_atomic(folder / "metrics.json", {folder.name: modes})
    return modes


def summarize(path: str | Path, majority: str = "normalized") -> dict[str, Metrics]:
    """Recompute every benchmark's metrics under `path` (see `benchmark_folders`), rewrite their metrics.json,
    return ``{bench: {mode: row}}``."""
    return {folder.name: score_folder(folder, majority=majority) for folder in benchmark_folders(path)}
