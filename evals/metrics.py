"""The published metrics, with NeMo-Skills' semantics, from per-sample records.

Records are the output lines: ``id``, ``seed``, ``predicted_answer``, ``symbolic_correct``,
``num_generated_tokens``, ``generation_start_time``, ``generation_end_time``. Every problem must have the same
number n of samples (`evals.summarize` picks the complete seeds and says so when some are not). A problem's
samples are ordered as NeMo-Skills reads them: by the sorted names of the ``output-rs<seed>.jsonl`` files
(``rs0, rs1, rs10, rs11, ..., rs2``), so "the first k samples" of every row below are the ones it uses.

For each k, over the problems (percentages are 0-100):

- ``pass@k``: the unbiased 1 - C(n-c, k) / C(n, k) with c correct of n; so ``pass@1`` is correct/total over all
  samples. Its ``no_answer``: share of problems whose first k samples all lack an answer.
- ``pass@1[avg-of-k]`` (k >= 2): mean correctness of the first k samples, ``no_answer`` the mean share of
  answerless ones, and ``symbolic_correct_statistics``: ``avg`` (the same mean, as a fraction),
  ``std_dev_across_runs`` (sample std of the k per-run accuracies, run j being every problem's j-th sample),
  ``std_err_across_runs`` (that / sqrt(k)) and ``avg_sample_std_dev`` (mean over problems of the sample std of
  its k scores), all fractions.
- ``majority@k`` (k >= 2): the score of the most frequent answer among the first k (no answer ignored; a
  problem without any answer scores 0); tied answers score the mean correctness of the tied answers.
  ``no_answer`` as for ``pass@k``. Answers are grouped by their normalized form (``204`` and ``0204`` are one
  answer) unless ``majority="raw"``: then by the raw string, as NeMo-Skills does.
- every row: ``num_entries`` (problems), ``avg_tokens`` (mean generated tokens over all n samples, truncated),
  ``gen_seconds`` (latest end - earliest start over the samples, truncated).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from evals.grading import normalize_answer

__all__ = [
    "MAJORITY_MODES",
    "pass_at_k",
    "majority_at_k",
    "group_samples",
    "seed_order",
    "compute_metrics",
    "published_modes",
]

MAJORITY_MODES = ("normalized", "raw")


def seed_order(seed: int) -> str:
    """Sort key putting seeds in NeMo-Skills' reading order (its sorted ``output-rs<seed>.jsonl`` names)."""
    return f"output-rs{int(seed)}.jsonl"


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k: 1 - C(n-c, k) / C(n, k) (chance that k of the n samples hold a correct one)."""
    if not 0 < k <= n or not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs 0 < k <= n and 0 <= c <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_at_k(
    answers: Sequence[str | None], correct: Sequence[bool], k: int, majority: str = "normalized"
) -> float:
    """Score of the most frequent answer among the first k (None ignored); ties: mean of the tied answers'
    correctness; no answer at all: 0. ``majority="raw"`` groups (raw answer, correctness) pairs as NeMo-Skills."""
    if majority not in MAJORITY_MODES:
        raise ValueError(f"majority must be one of {', '.join(MAJORITY_MODES)}, got {majority!r}")
    groups: dict[Any, list[bool]] = defaultdict(list)
    for answer, ok in zip(answers[:k], correct[:k]):
        if answer is None:
            continue
        key = (answer, bool(ok)) if majority == "raw" else normalize_answer(answer)
        groups[key].append(bool(ok))
    if not groups:
        return 0.0
    top = max(len(v) for v in groups.values())
    tied = [v for v in groups.values() if len(v) == top]
    return sum(sum(v) / len(v) for v in tied) / len(tied)


def group_samples(records: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """``{problem id: its samples in NeMo-Skills' file order}``, problems in order of first appearance."""
    by_id: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for rec in records:
        by_id[str(rec["id"])].append(rec)
    return {pid: sorted(samples, key=lambda r: seed_order(r.get("seed", 0))) for pid, samples in by_id.items()}


def _std(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _gen_seconds(records: Iterable[Mapping[str, Any]]) -> int:
    starts, ends = [], []
    for r in records:
        if r.get("generation_start_time") is not None:
            starts.append(float(r["generation_start_time"]))
        if r.get("generation_end_time") is not None:
            ends.append(float(r["generation_end_time"]))
    return int(max(ends) - min(starts)) if starts and ends else 0


def compute_metrics(records: Iterable[Mapping[str, Any]], majority: str = "normalized") -> dict[str, dict[str, Any]]:
    """``{mode: row}`` for every k from 1 to n: ``pass@1``, then per k >= 2 ``pass@1[avg-of-k]``,
    ``majority@k``, ``pass@k`` (see the module docstring). Raises ValueError when problems have unequal
    numbers of samples."""
    problems = group_samples(records)
    if not problems:
        return {}
    counts = sorted({len(s) for s in problems.values()})
    if len(counts) > 1:
        raise ValueError(
            f"problems have unequal numbers of samples ({', '.join(map(str, counts))}); score the "
            "complete seeds only (evals.summarize does)"
        )
    n = counts[0]
    num = len(problems)
    samples = list(problems.values())
    correct = [[bool(r.get("symbolic_correct")) for r in s] for s in samples]
    answers = [[None if r.get("predicted_answer") is None else str(r["predicted_answer"]) for r in s] for s in samples]
    common = {
        "num_entries": num,
        "avg_tokens": int(sum(sum(float(r.get("num_generated_tokens") or 0) for r in s) / n for s in samples) / num),
        "gen_seconds": _gen_seconds(r for s in samples for r in s),
    }

    def row(score: float, no_answer: float) -> dict[str, Any]:
        return {**common, "symbolic_correct": 100.0 * score / num, "no_answer": 100.0 * no_answer / num}

    def all_none(k: int) -> float:
        return sum(all(a is None for a in ans[:k]) for ans in answers)

    modes: dict[str, dict[str, Any]] = {
        "pass@1": row(sum(pass_at_k(n, sum(c), 1) for c in correct), all_none(1)),
    }
    for k in range(2, n + 1):
        avg = row(sum(sum(c[:k]) / k for c in correct), sum(sum(a is None for a in ans[:k]) / k for ans in answers))
        runs = [sum(c[j] for c in correct) / num for j in range(k)]
        std = _std(runs)
        avg["symbolic_correct_statistics"] = {
            "avg": sum(sum(c[:k]) / k for c in correct) / num,
            "std_dev_across_runs": std,
            "avg_sample_std_dev": sum(_std([float(x) for x in c[:k]]) for c in correct) / num,
            "std_err_across_runs": std / math.sqrt(k),
        }
        modes[f"pass@1[avg-of-{k}]"] = avg
        modes[f"majority@{k}"] = row(
            sum(majority_at_k(a, c, k, majority) for a, c in zip(answers, correct)), all_none(k)
        )
        modes[f"pass@{k}"] = row(sum(pass_at_k(n, sum(c), k) for c in correct), all_none(k))
    return modes


def published_modes(modes: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The rows of the published table: ``pass@1[avg-of-n]``, ``majority@n`` and ``pass@n`` for the largest n
    (``pass@1`` alone for one sample)."""
    ks = [int(m.split("@")[1]) for m in modes if m.startswith("majority@")]
    if not ks:
        return dict(modes)
    k = max(ks)
    wanted = (f"pass@1[avg-of-{k}]", f"majority@{k}", f"pass@{k}")
    return {m: modes[m] for m in wanted if m in modes}
