"""evals.data: the AIME loaders on ../shared/data, any JSONL file, benchmark specs, the hub path and its failures."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest

from evals.data import DATA_ENV, load_benchmark, load_jsonl, parse_benchmarks
from evals.errors import EvalError

DATA = Path(os.environ.get(DATA_ENV) or Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.mark.parametrize("name,year", [("aime24", "2024"), ("aime25", "2025")])
def test_aime_from_shared_data(name, year, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(DATA))
    recs = load_benchmark(name)
    assert len(recs) == 30
    assert len({r["id"] for r in recs}) == 30
    assert all(r["id"].startswith(year) for r in recs)
    assert all(r["problem"] and r["expected_answer"].isdigit() for r in recs)
    assert recs[0]["expected_answer"] == recs[0]["answer"]  # input fields are kept
    # --data-dir wins over the environment
    monkeypatch.setenv(DATA_ENV, "/nonexistent")
    assert load_benchmark(name, data_dir=DATA) == recs


def test_aime24_first_problem_matches_file():
    first = json.loads((DATA / "aime24.jsonl").read_text().splitlines()[0])
    rec = load_benchmark("aime24", data_dir=DATA)[0]
    assert (rec["id"], rec["problem"], rec["expected_answer"]) == (first["id"], first["problem"], first["answer"])


def test_data_dir_without_the_file(tmp_path):
    with pytest.raises(EvalError, match="has no aime24.jsonl"):
        load_benchmark("aime24", data_dir=tmp_path)


def test_jsonl_with_configurable_fields(tmp_path):
    p = tmp_path / "mine.jsonl"
    p.write_text('{"q": "1+1?", "a": 2, "uid": "x1"}\n\n{"q": "2+2?", "a": 4, "uid": "x2"}\n')
    recs = load_jsonl(p, problem_field="q", answer_field="a", id_field="uid")
    assert [(r["id"], r["problem"], r["expected_answer"]) for r in recs] == [("x1", "1+1?", "2"), ("x2", "2+2?", "4")]
    # no id field: the position is the id
    assert [r["id"] for r in load_jsonl(p, problem_field="q", answer_field="a")] == ["0", "1"]


def test_malformed_line_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"problem": "a", "answer": "1"}\n{"problem": "b", "answer": \n')
    with pytest.raises(EvalError, match=r"bad\.jsonl:2: malformed JSON"):
        load_jsonl(p)
    p.write_text('{"problem": "a", "answer": "1"}\n[1, 2]\n')
    with pytest.raises(EvalError, match=r"bad\.jsonl:2: expected a JSON object"):
        load_jsonl(p)


def test_missing_field_names_field_line_and_flag(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"problem": "a", "answer": "1"}\n{"question": "b", "answer": "2"}\n')
    with pytest.raises(EvalError, match=r"x\.jsonl:2: missing field 'problem'.*--problem-field"):
        load_jsonl(p)
    with pytest.raises(EvalError, match=r"missing field 'solution'.*--answer-field"):
        load_jsonl(p, problem_field="answer", answer_field="solution")


def test_duplicate_ids_and_missing_or_empty_file(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"id": 1, "problem": "a", "answer": "1"}\n{"id": 1, "problem": "b", "answer": "2"}\n')
    with pytest.raises(EvalError, match="id '1' repeats"):
        load_jsonl(p)
    with pytest.raises(EvalError, match="does not exist"):
        load_jsonl(tmp_path / "nope.jsonl")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(EvalError, match="holds no records"):
        load_jsonl(tmp_path / "e.jsonl")


def test_parse_benchmarks():
    specs = parse_benchmarks("aime24:16, aime25")
    assert [(s.name, s.num_samples, s.path) for s in specs] == [("aime24", 16, None), ("aime25", None, None)]
    [s] = parse_benchmarks("jsonl:/data/my_set.jsonl:8")
    assert (s.name, s.num_samples, s.path) == ("my_set", 8, "/data/my_set.jsonl")
    [s] = parse_benchmarks(["jsonl:rel/p.jsonl"])
    assert (s.name, s.num_samples, s.path) == ("p", None, "rel/p.jsonl")
    with pytest.raises(EvalError, match="unknown benchmark 'aime23'.*aime24, aime25"):
        parse_benchmarks("aime23")
    with pytest.raises(EvalError, match="NAME:SAMPLES"):
        parse_benchmarks("aime24:x")
    with pytest.raises(EvalError, match="at least 1"):
        parse_benchmarks("aime24:0")
    with pytest.raises(EvalError, match="given twice"):
        parse_benchmarks("aime24,aime24:4")


# ---------------------------------------------------------------------------------- Hugging Face hub path


def _no_local_data(monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)


def test_hub_without_datasets_library(monkeypatch):
    _no_local_data(monkeypatch)
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    hint = r"aime24: .*not installed; pip install 'harmony-agent\[datasets\]'.*--data-dir"
    with pytest.raises(EvalError, match=hint):
        load_benchmark("aime24")


def test_hub_download_failure(monkeypatch):
    _no_local_data(monkeypatch)
    fake = types.ModuleType("datasets")

    def load_dataset(*a, **k):
        raise ConnectionError("Couldn't reach 'HuggingFaceH4/aime_2024' on the Hub (LocalEntryNotFoundError)")

    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(EvalError) as e:
        load_benchmark("aime24")
    msg = str(e.value)
    assert "HuggingFaceH4/aime_2024" in msg and "ConnectionError" in msg and "--data-dir" in msg
    assert "\n" not in msg


def test_hub_rows_are_normalized(monkeypatch):
    """Field names and ids of the public copies (HuggingFaceH4/aime_2024, opencompass/AIME2025)."""
    _no_local_data(monkeypatch)
    calls = []
    fake = types.ModuleType("datasets")

    def load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        if name == "HuggingFaceH4/aime_2024":
            return [
                {
                    "id": 60,
                    "problem": "P1",
                    "answer": "204",
                    "solution": "...",
                    "year": "2024",
                    "url": "https://artofproblemsolving.com/wiki/index.php/2024_AIME_I_Problems/Problem_1",
                },
                {"id": 61, "problem": "P2", "answer": "25", "url": "https://x/2024_AIME_II_Problems/Problem_4"},
            ]
        return [{"question": f"{config} q{i}", "answer": str(i)} for i in range(2)]

    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    a24 = load_benchmark("aime24")
    assert [(r["id"], r["problem"], r["expected_answer"]) for r in a24] == [
        ("2024-I-1", "P1", "204"),
        ("2024-II-4", "P2", "25"),
    ]
    a25 = load_benchmark("aime25")
    assert [r["id"] for r in a25] == ["2025-I-1", "2025-I-2", "2025-II-1", "2025-II-2"]
    assert a25[2]["problem"] == "AIME2025-II q0"
    assert calls == [
        ("HuggingFaceH4/aime_2024", None, "train"),
        ("opencompass/AIME2025", "AIME2025-I", "test"),
        ("opencompass/AIME2025", "AIME2025-II", "test"),
    ]
