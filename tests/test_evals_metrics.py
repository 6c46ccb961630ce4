"""evals.metrics and evals.report on hand-computed cases."""
from __future__ import annotations

import math

import pytest

from evals.metrics import compute_metrics, ks_for, majority_at_k, no_answer_at_k, pass_at_k
from evals.report import format_report, format_table


def rec(pid, seed, answer, correct, tokens=100, start=100.0, end=101.0):
    return {"id": pid, "seed": seed, "predicted_answer": answer, "symbolic_correct": correct,
            "num_generated_tokens": tokens, "generation_start_time": start, "generation_end_time": end}


def test_ks_for():
    assert ks_for(1) == [1]
    assert ks_for(2) == [1, 2]
    assert ks_for(6) == [1, 2, 4, 6]
    assert ks_for(16) == [1, 2, 4, 8, 16]
    assert ks_for(0) == []


def test_pass_at_k_unbiased():
    assert pass_at_k(4, 0, 2) == 0.0
    assert pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)      # 1 - C(3,2)/C(4,2)
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)      # 1 - C(2,2)/C(4,2)
    assert pass_at_k(4, 2, 3) == 1.0                           # n - c < k
    assert pass_at_k(16, 15, 16) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_no_answer_at_k():
    assert no_answer_at_k(4, 0, 2) == 0.0
    assert no_answer_at_k(4, 4, 4) == 1.0
    assert no_answer_at_k(4, 2, 2) == pytest.approx(1 / 6)
    assert no_answer_at_k(4, 3, 4) == 0.0


def test_majority_plain_and_normalized():
    # "025" and "25" are one answer: 2 votes beat 1
    assert majority_at_k(["025", "25", "7"], [True, True, False], 3) == 1.0
    assert majority_at_k(["7", "7", "25"], [False, False, True], 3) == 0.0


def test_majority_ties_get_mean_correctness():
    assert majority_at_k(["1", "2"], [True, False], 2) == 0.5
    assert majority_at_k(["1", "1", "2", "2", "3"], [False, False, True, True, False], 5) == 0.5
    assert majority_at_k(["1", "2", "3"], [True, False, False], 3) == pytest.approx(1 / 3)


def test_majority_ignores_none_and_all_none_scores_zero():
    assert majority_at_k([None, None, "5"], [False, False, True], 3) == 1.0
    assert majority_at_k([None, None], [False, False], 2) == 0.0
    assert majority_at_k([None, "  ", None], [False, False, False], 3) == 0.0


def test_majority_first_k_only():
    answers = ["5", "6", "6", "6"]
    correct = [True, False, False, False]
    assert majority_at_k(answers, correct, 1) == 1.0
    assert majority_at_k(answers, correct, 2) == 0.5
    assert majority_at_k(answers, correct, 4) == 0.0


def test_compute_metrics_hand_computed():
    # Problem a: 4 samples, answers 5,5,None,6 (5 correct) -> first-k means: k1 1, k2 1, k4 .5
    # Problem b: 4 samples, all None -> 0 everywhere, no_answer 100%
    # Problem c: answers 1,2,2,3 with 1 correct -> k1 1, k2 .5, k4 .25
    recs = [
        rec("a", 0, "5", True, 10, 100, 110), rec("a", 1, "5", True, 20), rec("a", 2, None, False, 30),
        rec("a", 3, "6", False, 40),
        rec("b", 0, None, False, 50), rec("b", 1, None, False, 50), rec("b", 2, None, False, 50),
        rec("b", 3, None, False, 50, 90, 95),
        rec("c", 3, "3", False, 60), rec("c", 2, "2", False, 60), rec("c", 1, "2", False, 60),
        rec("c", 0, "1", True, 60, 120, 130),  # out of order on purpose: sorted by seed
    ]
    m = compute_metrics(recs)
    assert list(m) == ["pass@1", "pass@1[avg-of-2]", "majority@2", "pass@2",
                       "pass@1[avg-of-4]", "majority@4", "pass@4"]
    assert all(row["num_entries"] == 3 for row in m.values())
    assert all(row["gen_seconds"] == 40 for row in m.values())  # max end 130 - min start 90
    assert m["pass@1"]["symbolic_correct"] == pytest.approx(100 * 2 / 3)
    assert m["pass@1"]["no_answer"] == pytest.approx(100 / 3)
    assert m["pass@1"]["avg_tokens"] == round((10 + 50 + 60) / 3)
    assert m["pass@1[avg-of-2]"]["symbolic_correct"] == pytest.approx(100 * (1 + 0 + 0.5) / 3)
    assert m["pass@1[avg-of-4]"]["symbolic_correct"] == pytest.approx(100 * (0.5 + 0 + 0.25) / 3)
    assert m["pass@1[avg-of-4]"]["no_answer"] == pytest.approx(100 * (0.25 + 1 + 0) / 3)
    assert m["pass@1[avg-of-4]"]["avg_tokens"] == round((10 + 20 + 30 + 40 + 200 + 240) / 12)
    # majority@2: a -> 5 (right) 1; b -> 0; c -> tie 1 vs 2 -> (1+0)/2
    assert m["majority@2"]["symbolic_correct"] == pytest.approx(100 * (1 + 0 + 0.5) / 3)
    # majority@4: a -> 5 (2 votes) 1; b 0; c -> 2 (2 votes) 0
    assert m["majority@4"]["symbolic_correct"] == pytest.approx(100 / 3)
    assert m["majority@4"]["no_answer"] == pytest.approx(100 / 3)  # problem b
    # pass@2 with n=4: a c=2 -> 1-1/6; b 0; c c=1 -> 1-3/6
    assert m["pass@2"]["symbolic_correct"] == pytest.approx(100 * ((1 - 1 / 6) + 0 + 0.5) / 3)
    # no_answer@2: a has 1 None of 4 -> C(1,2)=0; b all None -> 1; c 0
    assert m["pass@2"]["no_answer"] == pytest.approx(100 / 3)
    assert m["pass@4"]["symbolic_correct"] == pytest.approx(200 / 3)
    # spread: per-run accuracy over the 4 runs = [2/3, 1/3, 0, 0]
    runs = [2 / 3, 1 / 3, 0, 0]
    mean = sum(runs) / 4
    std = math.sqrt(sum((r - mean) ** 2 for r in runs) / 3)
    assert m["pass@1[avg-of-4]"]["symbolic_correct_std_across_runs"] == pytest.approx(100 * std)
    assert m["pass@1[avg-of-4]"]["num_runs"] == 4


def test_uneven_sample_counts_use_the_common_n():
    recs = [rec("a", s, "1", True) for s in range(4)] + [rec("b", s, "2", s == 0) for s in range(2)]
    m = compute_metrics(recs)
    assert "pass@4" not in m and "pass@2" in m
    assert m["pass@1[avg-of-2]"]["symbolic_correct"] == pytest.approx(100 * (1 + 0.5) / 2)


def test_k_smaller_than_n_and_n_not_a_power_of_two():
    recs = [rec("a", s, str(s % 2), s % 2 == 1) for s in range(3)]  # answers 0,1,0; correct F,T,F
    m = compute_metrics(recs)
    assert list(m) == ["pass@1", "pass@1[avg-of-2]", "majority@2", "pass@2",
                       "pass@1[avg-of-3]", "majority@3", "pass@3"]
    assert m["pass@1"]["symbolic_correct"] == 0.0
    assert m["pass@1[avg-of-2]"]["symbolic_correct"] == 50.0
    assert m["majority@2"]["symbolic_correct"] == 50.0    # tie 0 vs 1
    assert m["majority@3"]["symbolic_correct"] == 0.0     # 0 wins 2:1
    assert m["pass@2"]["symbolic_correct"] == pytest.approx(100 * (1 - 1 / 3))  # 1 - C(2,2)/C(3,2)
    assert m["pass@3"]["symbolic_correct"] == 100.0


def test_empty_records():
    assert compute_metrics([]) == {}


def test_table_layout():
    modes = {
        "pass@1[avg-of-16]": {"num_entries": 30, "avg_tokens": 13306, "gen_seconds": 1645,
                              "symbolic_correct": 96.4583, "no_answer": 0.41666,
                              "symbolic_correct_std_across_runs": 2.5, "num_runs": 16},
        "majority@16": {"num_entries": 30, "avg_tokens": 13306, "gen_seconds": 1645, "symbolic_correct": 100.0,
                        "no_answer": 0.0},
        "pass@16": {"num_entries": 30, "avg_tokens": 13306, "gen_seconds": 1645, "symbolic_correct": 100.0,
                    "no_answer": 0.0},
    }
    lines = format_table("aime24", modes).splitlines()
    assert lines[0].strip("-") == " aime24 " and len(lines[0]) == len(lines[1])
    assert [c.strip() for c in lines[1].split("|")] == ["evaluation_mode", "num_entries", "avg_tokens",
                                                        "gen_seconds", "symbolic_correct", "no_answer"]
    assert [c.strip() for c in lines[2].split("|")] == ["pass@1[avg-of-16]", "30", "13306", "1645", "96.46%", "0.42%"]
    assert [c.strip() for c in lines[3].split("|")] == ["majority@16", "30", "13306", "1645", "100.00%", "0.00%"]
    assert [c.strip() for c in lines[4].split("|")] == ["pass@16", "30", "13306", "1645", "100.00%", "0.00%"]
    assert "16 runs" in lines[5] and "2.50" in lines[5]


def test_report_prints_the_published_rows_unless_all_k():
    records = [{"id": str(p), "seed": s, "predicted_answer": "1", "symbolic_correct": s % 2 == 0,
                "num_generated_tokens": 10, "generation_start_time": 0.0, "generation_end_time": 1.0}
               for p in range(2) for s in range(4)]
    metrics = {"b": compute_metrics(records)}
    published = [line.split("|")[0].strip() for line in format_report(metrics).splitlines()[2:5]]
    assert published == ["pass@1[avg-of-4]", "majority@4", "pass@4"]
    everything = format_report(metrics, full=True)
    assert "pass@1[avg-of-2]" in everything and "majority@2" in everything
    assert "pass@1[avg-of-2]" not in format_report(metrics)
