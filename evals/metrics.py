"""Published metrics from per-sample records: pass@1[avg-of-k], majority@k, pass@k, no_answer, tokens, time.

Records are dicts with ``id``, ``seed``, ``predicted_answer``, ``symbolic_correct``, ``num_generated_tokens``,
``generation_start_time``, ``generation_end_time`` (the output lines). Per problem the samples are ordered
by seed; "the first k" are the k lowest seeds. n is the smallest number of samples any problem has, so an
unfinished run is scored on a common footing (pass@k uses those n samples). Percentages are 0-100.

no_answer: for pass@1 rows the share of samples without an extracted answer; for majority@k the share of
problems whose first k samples all lack one; for pass@k the (unbiased) chance that k samples drawn from the
n all lack one, C(m,k)/C(n,k) with m answerless samples, which is the same share of problems when k = n.
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any, Iterable, Mapping, Optional, Sequence

from evals.grading import normalize_answer

__all__ = ["ks_for", "pass_at_k", "no_answer_at_k", "majority_at_k", "group_samples", "compute_metrics"]


def ks_for(n: int) -> list[int]:
    """The k values reported for n samples: powers of two up to n, plus n itself."""
    if n < 1:
        return []
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    if ks[-1] != n:
        ks.append(n)
    return ks


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k: 1 - C(n-c, k) / C(n, k) (chance that k of the n samples hold a correct one)."""
    if not 0 < k <= n or not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs 0 < k <= n and 0 <= c <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def no_answer_at_k(n: int, m: int, k: int) -> float:
    """Chance that k samples drawn from n, m of them answerless, are all answerless: C(m, k) / C(n, k)."""
    if not 0 < k <= n or not 0 <= m <= n:
        raise ValueError(f"no_answer_at_k needs 0 < k <= n and 0 <= m <= n, got n={n} m={m} k={k}")
    return math.comb(m, k) / math.comb(n, k)


def majority_at_k(answers: Sequence[Optional[str]], correct: Sequence[bool], k: int) -> float:
    """Score of the most frequent answer among the first k (None ignored; answers compared normalized).

    Tied answers earn the mean correctness of the tied answers; all-None scores 0.
    """
    groups: dict[str, list[bool]] = defaultdict(list)
    for answer, ok in zip(answers[:k], correct[:k]):
        key = normalize_answer(answer) if answer is not None else ""
        if key:
            groups[key].append(bool(ok))
    if not groups:
        return 0.0
    top = max(len(v) for v in groups.values())
    tied = [v for v in groups.values() if len(v) == top]
    return sum(sum(v) / len(v) for v in tied) / len(tied)


def group_samples(records: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """``{problem id: samples ordered by seed}``."""
    by_id: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for rec in records:
        by_id[str(rec["id"])].append(rec)
    return {pid: sorted(samples, key=lambda r: int(r.get("seed", 0))) for pid, samples in by_id.items()}


def _answer(rec: Mapping[str, Any]) -> Optional[str]:
    a = rec.get("predicted_answer")
    return None if a is None or not str(a).strip() else str(a)


def _tokens(samples: Iterable[Mapping[str, Any]]) -> list[float]:
    return [float(r.get("num_generated_tokens") or 0) for r in samples]


def _gen_seconds(records: Sequence[Mapping[str, Any]]) -> int:
    starts = [float(r["generation_start_time"]) for r in records if r.get("generation_start_time") is not None]
    ends = [float(r["generation_end_time"]) for r in records if r.get("generation_end_time") is not None]
    if not starts or not ends:
        return 0
    return int(round(max(0.0, max(ends) - min(starts))))


def _row(num_entries: int, tokens: list[float], gen_seconds: int, correct: float, no_answer: float) -> dict:
    return {
        "num_entries": num_entries,
        "avg_tokens": int(round(sum(tokens) / len(tokens))) if tokens else 0,
        "gen_seconds": gen_seconds,
        "symbolic_correct": 100.0 * correct,
        "no_answer": 100.0 * no_answer,
    }


def compute_metrics(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{mode: {"num_entries", "avg_tokens", "gen_seconds", "symbolic_correct", "no_answer", ...}}``.

    Modes, in order: ``pass@1``, then for each k > 1 of `ks_for(n)`: ``pass@1[avg-of-k]``, ``majority@k``,
    ``pass@k``. ``pass@1[avg-of-k]`` also carries ``symbolic_correct_std_across_runs`` (sample standard
    deviation, in points, of the accuracy of each of the k runs, run j being every problem's j-th sample)
    and ``num_runs``. avg_tokens counts model-generated tokens only; gen_seconds is the wall-clock span
    (latest end - earliest start) over all the benchmark's samples.
    """
    records = list(records)
    problems = group_samples(records)
    if not problems:
        return {}
    n = min(len(s) for s in problems.values())
    samples = {pid: s[:n] for pid, s in problems.items()}
    num = len(samples)
    span = _gen_seconds(records)
    correct = {pid: [bool(r.get("symbolic_correct")) for r in s] for pid, s in samples.items()}
    answers = {pid: [_answer(r) for r in s] for pid, s in samples.items()}

    modes: dict[str, dict[str, Any]] = {}
    for k in ks_for(n):
        first_k = [r for s in samples.values() for r in s[:k]]
        avg_correct = sum(sum(c[:k]) / k for c in correct.values()) / num
        no_ans = sum(sum(a is None for a in ans[:k]) / k for ans in answers.values()) / num
        if k == 1:
            modes["pass@1"] = _row(num, _tokens(first_k), span, avg_correct, no_ans)
            continue
        row = _row(num, _tokens(first_k), span, avg_correct, no_ans)
        per_run = [sum(correct[pid][j] for pid in samples) / num for j in range(k)]
        row["symbolic_correct_std_across_runs"] = 100.0 * statistics.stdev(per_run)
        row["num_runs"] = k
        modes[f"pass@1[avg-of-{k}]"] = row
        maj = sum(majority_at_k(answers[pid], correct[pid], k) for pid in samples) / num
        maj_none = sum(all(a is None for a in answers[pid][:k]) for pid in samples) / num
        modes[f"majority@{k}"] = _row(num, _tokens(first_k), span, maj, maj_none)
        pk = sum(pass_at_k(n, sum(correct[pid]), k) for pid in samples) / num
        pk_none = sum(no_answer_at_k(n, sum(a is None for a in answers[pid]), k) for pid in samples) / num
        modes[f"pass@{k}"] = _row(num, _tokens(r for s in samples.values() for r in s), span, pk, pk_none)
    return modes
