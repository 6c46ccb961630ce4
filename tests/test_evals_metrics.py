"""evals.metrics and evals.report on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from evals.metrics import compute_metrics, group_samples, majority_at_k, pass_at_k
from evals.report import format_report, format_table


def rec(pid, seed, answer, correct, tokens=100, start=100.0, end=101.0):
    return {
        "id": pid,
        "seed": seed,
        "predicted_answer": answer,
        "symbolic_correct": correct,
        "num_generated_tokens": tokens,
        "generation_start_time": start,
        "generation_end_time": end,
    }


def metrics_of(answers_by_problem, correct_by_problem, **kw):
    recs = [
        rec(pid, seed, a, c, **kw)
        for pid in answers_by_problem
        for seed, (a, c) in enumerate(zip(answers_by_problem[pid], correct_by_problem[pid]))
    ]
    return compute_metrics(recs)


def test_pass_at_k_unbiased():
    assert pass_at_k(4, 0, 2) == 0.0
    assert pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)  # 1 - C(2,2)/C(4,2)
    assert pass_at_k(4, 2, 3) == 1.0  # n - c < k
    assert pass_at_k(16, 15, 16) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_every_k_from_1_to_n_and_no_avg_of_1():
    m = metrics_of({"a": ["1"] * 5}, {"a": [True] * 5})
    assert list(m) == ["pass@1"] + [
        x for k in range(2, 6) for x in (f"pass@1[avg-of-{k}]", f"majority@{k}", f"pass@{k}")
    ]
    assert "pass@1[avg-of-1]" not in m and "majority@1" not in m
    assert list(metrics_of({"a": ["1"]}, {"a": [True]})) == ["pass@1"]


def test_pass_at_1_is_correct_over_all_samples_and_its_no_answer_the_first_sample():
    # x: no answer then right; y: right then no answer (NeMo-Skills: pass@1 = c/n per problem, no_answer of the
    # first sample only)
    m = metrics_of({"x": [None, "3"], "y": ["4", None]}, {"x": [False, True], "y": [True, False]})
    assert m["pass@1"]["symbolic_correct"] == pytest.approx(50.0)
    assert m["pass@1"]["no_answer"] == pytest.approx(50.0)  # only x's first sample lacks one
    assert m["pass@1[avg-of-2]"]["no_answer"] == pytest.approx(50.0)  # mean share over the first 2
    assert m["pass@2"]["no_answer"] == 0.0 and m["majority@2"]["no_answer"] == 0.0  # no problem lacks all
    assert m["majority@2"]["symbolic_correct"] == 100.0  # None ignored: the one answer wins
    m = metrics_of({"x": ["5", None]}, {"x": [False, True]})  # pass@1 counts sample 2 too
    assert m["pass@1"]["symbolic_correct"] == pytest.approx(50.0) and m["pass@1"]["no_answer"] == 0.0


def test_pass_at_k_no_answer_is_the_share_of_problems_whose_first_k_all_lack_one():
    m = metrics_of({"d": [None, None, "7", "7"]}, {"d": [False, False, True, True]})
    assert m["pass@2"]["no_answer"] == 100.0  # first 2 lack an answer (not C(2,2)/C(4,2))
    assert m["majority@2"]["no_answer"] == 100.0 and m["majority@2"]["symbolic_correct"] == 0.0
    assert m["pass@3"]["no_answer"] == 0.0 and m["majority@3"]["symbolic_correct"] == 100.0
    assert m["pass@2"]["symbolic_correct"] == pytest.approx(100 * (1 - 1 / 6))  # but pass@k uses all n
    assert m["pass@1[avg-of-2]"]["no_answer"] == 100.0 and m["pass@1[avg-of-4]"]["no_answer"] == 50.0


def test_avg_tokens_over_all_samples_in_every_row_truncated_and_gen_seconds_truncated():
    recs = [rec("a", s, "1", True, tokens=t) for s, t in enumerate((10, 20, 30, 42))]  # mean 25.5
    recs += [rec("b", s, "1", True, tokens=t) for s, t in enumerate((50, 50, 50, 51))]  # 50.25
    recs += [rec("c", s, "1", True, tokens=t) for s, t in enumerate((61, 61, 61, 62))]  # 61.25
    recs[0]["generation_start_time"], recs[-1]["generation_end_time"] = 90.0, 130.9
    m = compute_metrics(recs)
    assert {row["avg_tokens"] for row in m.values()} == {45}  # 137/3 = 45.67 -> 45 (not 46), every row
    assert {row["gen_seconds"] for row in m.values()} == {40}  # 130.9 - 90 = 40.9 -> 40 (not 41)
    assert {row["num_entries"] for row in m.values()} == {3}


def test_hand_computed_rows_and_statistics():
    # a: 5,5,None,6 (5 right); b: no answers; c: 1,2,2,3 (1 right)
    m = metrics_of(
        {"a": ["5", "5", None, "6"], "b": [None] * 4, "c": ["1", "2", "2", "3"]},
        {"a": [True, True, False, False], "b": [False] * 4, "c": [True, False, False, False]},
    )
    assert m["pass@1"]["symbolic_correct"] == pytest.approx(100 * (2 / 4 + 0 + 1 / 4) / 3)
    assert m["pass@1"]["no_answer"] == pytest.approx(100 / 3)
    assert m["pass@1[avg-of-2]"]["symbolic_correct"] == pytest.approx(100 * (1 + 0 + 0.5) / 3)
    assert m["pass@1[avg-of-4]"]["symbolic_correct"] == pytest.approx(100 * (0.5 + 0 + 0.25) / 3)
    assert m["pass@1[avg-of-4]"]["no_answer"] == pytest.approx(100 * (0.25 + 1 + 0) / 3)
    assert m["majority@2"]["symbolic_correct"] == pytest.approx(100 * (1 + 0 + 0.5) / 3)  # c: 1 vs 2 tie
    assert m["majority@3"]["symbolic_correct"] == pytest.approx(100 / 3)  # c: 2 wins
    assert m["majority@4"]["symbolic_correct"] == pytest.approx(100 / 3)
    assert m["majority@4"]["no_answer"] == pytest.approx(100 / 3)
    assert m["pass@2"]["symbolic_correct"] == pytest.approx(100 * ((1 - 1 / 6) + 0 + 0.5) / 3)
    assert m["pass@4"]["symbolic_correct"] == pytest.approx(200 / 3)
    s2 = m["pass@1[avg-of-2]"]["symbolic_correct_statistics"]
    # runs: seed 0 -> [1, 0, 1] = 2/3, seed 1 -> [1, 0, 0] = 1/3
    assert s2["avg"] == pytest.approx(0.5)
    assert s2["std_dev_across_runs"] == pytest.approx(math.sqrt(2 * (1 / 6) ** 2))
    assert s2["std_err_across_runs"] == pytest.approx(math.sqrt(2 * (1 / 6) ** 2) / math.sqrt(2))
    assert s2["avg_sample_std_dev"] == pytest.approx((0 + 0 + math.sqrt(0.5)) / 3)  # stdev([1, 0]) = 0.7071
    s4 = m["pass@1[avg-of-4]"]["symbolic_correct_statistics"]
    runs = [2 / 3, 1 / 3, 0, 0]
    mean = sum(runs) / 4
    std = math.sqrt(sum((r - mean) ** 2 for r in runs) / 3)
    assert s4["std_dev_across_runs"] == pytest.approx(std) and s4["std_err_across_runs"] == pytest.approx(std / 2)
    assert s4["avg_sample_std_dev"] == pytest.approx((math.sqrt(1 / 3) + 0 + 0.5) / 3)  # stdev 1100, 0000, 1000
    assert s4["avg"] == pytest.approx(0.25)
    assert "symbolic_correct_statistics" not in m["pass@1"] and "symbolic_correct_statistics" not in m["pass@4"]


def test_first_k_follows_nemo_skills_file_order():
    # NeMo-Skills reads sorted file names: output-rs0, rs1, rs10, rs11, rs2, ..., so its first 4 samples are
    # seeds 0, 1, 10, 11. Here only seeds 10 and 11 are right.
    recs = [rec("a", s, str(s), s in (10, 11)) for s in range(12)]
    assert [r["seed"] for r in group_samples(recs)["a"]][:5] == [0, 1, 10, 11, 2]
    m = compute_metrics(recs)
    assert m["pass@1[avg-of-4]"]["symbolic_correct"] == 50.0
    assert m["pass@1[avg-of-2]"]["symbolic_correct"] == 0.0
    assert m["pass@1[avg-of-12]"]["symbolic_correct"] == pytest.approx(100 * 2 / 12)


def test_majority_ties_get_mean_correctness():
    assert majority_at_k(["1", "2"], [True, False], 2) == 0.5
    assert majority_at_k(["1", "1", "2", "2", "3"], [False, False, True, True, False], 5) == 0.5
    assert majority_at_k(["1", "2", "3"], [True, False, False], 3) == pytest.approx(1 / 3)  # 3-way tie
    assert majority_at_k([None, None], [False, False], 2) == 0.0
    assert majority_at_k(["5", "6", "6", "6"], [True, False, False, False], 2) == 0.5  # first k only


def test_majority_groups_equivalent_spellings_unless_raw():
    answers, correct = ["204", "0204", "7", "7"], [True, True, False, False]
    assert majority_at_k(answers, correct, 4) == 0.5  # {204, 0204} ties {7, 7}
    assert majority_at_k(answers, correct, 4, "raw") == 0.0  # NeMo-Skills: "7" has 2 votes, the others 1
    recs = [rec("a", s, a, c) for s, (a, c) in enumerate(zip(answers, correct))]
    assert compute_metrics(recs)["majority@4"]["symbolic_correct"] == 50.0
    assert compute_metrics(recs, majority="raw")["majority@4"]["symbolic_correct"] == 0.0
    with pytest.raises(ValueError, match="majority must be one of normalized, raw"):
        majority_at_k(answers, correct, 4, "fuzzy")


def test_unequal_sample_counts_are_refused():
    recs = [rec("a", s, "1", True) for s in range(4)] + [rec("b", s, "2", True) for s in range(2)]
    with pytest.raises(ValueError, match="unequal numbers of samples"):
        compute_metrics(recs)


def test_empty_records():
    assert compute_metrics([]) == {}


def test_table_layout():
    modes = {
        "pass@1[avg-of-16]": {
            "num_entries": 30,
            "avg_tokens": 13306,
            "gen_seconds": 1645,
            "symbolic_correct": 96.4583,
            "no_answer": 0.41666,
            "symbolic_correct_statistics": {
                "avg": 0.964583,
                "std_dev_across_runs": 0.025,
                "avg_sample_std_dev": 0.1,
                "std_err_across_runs": 0.006,
            },
        },
        "majority@16": {
            "num_entries": 30,
            "avg_tokens": 13306,
            "gen_seconds": 1645,
            "symbolic_correct": 100.0,
            "no_answer": 0.0,
        },
        "pass@16": {
            "num_entries": 30,
            "avg_tokens": 13306,
            "gen_seconds": 1645,
            "symbolic_correct": 100.0,
            "no_answer": 0.0,
        },
    }
    lines = format_table("aime24", modes).splitlines()
    assert lines[0].strip("-") == " aime24 " and len(lines[0]) == len(lines[1])
    assert [c.strip() for c in lines[1].split("|")] == [
        "evaluation_mode",
        "num_entries",
        "avg_tokens",
        "gen_seconds",
        "symbolic_correct",
        "no_answer",
    ]
    # the spread across runs beside the accuracy, as NeMo-Skills prints it
    assert [c.strip() for c in lines[2].split("|")] == [
        "pass@1[avg-of-16]",
        "30",
        "13306",
        "1645",
        "96.46% ± 2.50%",
        "0.42%",
    ]
    assert [c.strip() for c in lines[3].split("|")] == ["majority@16", "30", "13306", "1645", "100.00%", "0.00%"]
    assert [c.strip() for c in lines[4].split("|")] == ["pass@16", "30", "13306", "1645", "100.00%", "0.00%"]
    assert len(lines) == 5


def test_report_prints_the_published_rows_unless_all_k():
    records = [
        {
            "id": str(p),
            "seed": s,
            "predicted_answer": "1",
            "symbolic_correct": s % 2 == 0,
            "num_generated_tokens": 10,
            "generation_start_time": 0.0,
            "generation_end_time": 1.0,
        }
        for p in range(2)
        for s in range(4)
    ]
    metrics = {"b": compute_metrics(records)}
    published = [line.split("|")[0].strip() for line in format_report(metrics).splitlines()[2:5]]
    assert published == ["pass@1[avg-of-4]", "majority@4", "pass@4"]
    everything = format_report(metrics, full=True)
    assert "pass@1[avg-of-2]" in everything and "majority@2" in everything
    assert "pass@1[avg-of-2]" not in format_report(metrics)
