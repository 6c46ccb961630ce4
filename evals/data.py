"""Benchmark loaders: aime24, aime25 and any JSONL file, as records with ``id``, ``problem``, ``expected_answer``.

Where the data comes from, in order: ``data_dir`` (``--data-dir``) or the ``HARMONY_EVAL_DATA`` environment
variable, a folder holding ``<name>.jsonl``; otherwise the public data set through Hugging Face ``datasets``
(cached by that library). The repository never carries a copy of the data.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.errors import EvalError

__all__ = [
    "BENCHMARKS",
    "BenchmarkSpec",
    "parse_benchmarks",
    "load_benchmark",
    "load_jsonl",
    "read_jsonl_rows",
    "normalize_records",
    "DATA_ENV",
]

DATA_ENV = "HARMONY_EVAL_DATA"
DATASETS_HINT = "pip install 'harmony-agent[datasets]' (needs Hugging Face hub access) or pass --data-dir DIR"


@dataclass(frozen=True)
class HubSource:
    """Where a benchmark lives on the Hugging Face hub and how to read its rows."""

    dataset: str
    configs: tuple[str | None, ...]
    split: str
    problem_field: str
    answer_field: str
    make_id: Callable[[dict, str | None, int], str]


def _aime24_id(row: dict, config: str | None, index: int) -> str:
    # HuggingFaceH4/aime_2024 rows carry an AoPS url such as ".../2024_AIME_II_Problems/Problem_4".
    m = re.search(r"AIME_(I{1,2})_Problems/Problem_(\d+)", str(row.get("url", "")))
    return f"2024-{m.group(1)}-{int(m.group(2))}" if m else str(row.get("id", index))


def _aime25_id(row: dict, config: str | None, index: int) -> str:
    # opencompass/AIME2025 has one config per contest ("AIME2025-I", "AIME2025-II"), problems in order.
    return f"2025-{str(config).rsplit('-', 1)[-1]}-{index + 1}"


BENCHMARKS: dict[str, HubSource] = {
    "aime24": HubSource("HuggingFaceH4/aime_2024", (None,), "train", "problem", "answer", _aime24_id),
    "aime25": HubSource(
        "opencompass/AIME2025", ("AIME2025-I", "AIME2025-II"), "test", "question", "answer", _aime25_id
    ),
}


@dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark of a run: its name, samples per problem (None: the default) and JSONL path if any."""

    name: str
    num_samples: int | None = None
    path: str | None = None


def parse_benchmarks(spec: str | Sequence[str]) -> list[BenchmarkSpec]:
    """Parse ``"aime24:16,aime25:16"`` / ``"jsonl:PATH[:N]"`` into specs (a bare name takes the default n)."""
    items = [spec] if isinstance(spec, str) else list(spec)
    parts = [p.strip() for item in items for p in str(item).split(",") if p.strip()]
    out: list[BenchmarkSpec] = []
    for part in parts:
        body, n = part, None
        head, sep, tail = part.rpartition(":")
        if sep and tail.isdigit() and head:
            body, n = head, int(tail)
            if n < 1:
                raise EvalError(f"benchmark {part!r}: the number of samples must be at least 1")
        elif sep and not part.startswith("jsonl:"):
            raise EvalError(f"benchmark {part!r}: expected NAME or NAME:SAMPLES, e.g. aime24:16")
        if body.startswith("jsonl:"):
            path = body[len("jsonl:") :]
            if not path:
                raise EvalError(f"benchmark {part!r}: give a file, e.g. jsonl:problems.jsonl")
            out.append(BenchmarkSpec(Path(path).stem, n, path))
        elif body in BENCHMARKS:
            out.append(BenchmarkSpec(body, n, None))
        else:
            raise EvalError(
                f"unknown benchmark {body!r}; known: {', '.join(sorted(BENCHMARKS))}, "
                "or jsonl:PATH / --input-file PATH for your own file"
            )
    names = [s.name for s in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise EvalError(f"benchmark {dupes[0]!r} is given twice; list each benchmark once")
    return out


def read_jsonl_rows(path: str | os.PathLike) -> list[dict]:
    """Rows of a JSONL input file; a malformed line raises EvalError naming the file and line number."""
    p = Path(path)
    if not p.is_file():
        raise EvalError(f"input file {str(p)!r} does not exist; check the path")
    rows: list[dict] = []
    with open(p, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise EvalError(f"{p}:{lineno}: malformed JSON ({e.msg}); fix or remove that line") from None
            if not isinstance(row, dict):
                raise EvalError(f"{p}:{lineno}: expected a JSON object per line, got {type(row).__name__}")
            row["__line__"] = lineno
            rows.append(row)
    if not rows:
        raise EvalError(f"input file {str(p)!r} holds no records")
    return rows


def normalize_records(
    rows: Sequence[dict],
    *,
    source: str,
    problem_field: str | None = "problem",
    answer_field: str | None = "answer",
    id_field: str = "id",
) -> list[dict]:
    """Records with ``id``, ``problem`` (when `problem_field`) and ``expected_answer`` (when `answer_field`)
    plus every input field. A missing id falls back to the row's position; ids must be unique."""
    out: list[dict] = []
    seen: dict[str, int] = {}
    for index, row in enumerate(rows):
        lineno = row.pop("__line__", index + 1)
        where = f"{source}:{lineno}"
        rec: dict[str, Any] = dict(row)
        for field, flag in ((problem_field, "--problem-field"), (answer_field, "--answer-field")):
            if field is not None and field not in row:
                raise EvalError(
                    f"{where}: missing field {field!r} (fields: {', '.join(sorted(row)) or 'none'}); "
                    f"name the right one with {flag}"
                )
        rid = str(row[id_field]) if id_field in row and row[id_field] is not None else str(index)
        if rid in seen:
            raise EvalError(
                f"{where}: id {rid!r} repeats (first at record {seen[rid] + 1}); ids must be unique "
                "(choose another with --id-field)"
            )
        seen[rid] = index
        rec["id"] = rid
        if problem_field is not None:
            rec["problem"] = str(row[problem_field])
        if answer_field is not None:
            rec["expected_answer"] = str(row[answer_field])
        out.append(rec)
    return out


def load_jsonl(
    path: str | os.PathLike,
    *,
    problem_field: str = "problem",
    answer_field: str | None = "answer",
    id_field: str = "id",
) -> list[dict]:
    """Records of any JSONL file with configurable problem/answer/id fields."""
    return normalize_records(
        read_jsonl_rows(path),
        source=str(path),
        problem_field=problem_field,
        answer_field=answer_field,
        id_field=id_field,
    )


def load_benchmark(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    path: str | None = None,
    problem_field: str = "problem",
    answer_field: str = "answer",
    id_field: str = "id",
) -> list[dict]:
    """Records of a benchmark: a JSONL `path`, ``<data_dir or $HARMONY_EVAL_DATA>/<name>.jsonl``, or the hub."""
    if path is not None:
        return load_jsonl(path, problem_field=problem_field, answer_field=answer_field, id_field=id_field)
    if name not in BENCHMARKS:
        raise EvalError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}, or jsonl:PATH")
    folder = data_dir if data_dir is not None else os.environ.get(DATA_ENV) or None
    if folder is not None:
        file = Path(folder) / f"{name}.jsonl"
        if not file.is_file():
            origin = "--data-dir" if data_dir is not None else f"${DATA_ENV}"
            raise EvalError(
                f"{origin} folder {str(folder)!r} has no {name}.jsonl; point it at a folder holding "
                f"{name}.jsonl (fields id, problem, answer)"
            )
        return load_jsonl(file, problem_field=problem_field, answer_field=answer_field, id_field=id_field)
    return load_from_hub(name)


def load_from_hub(name: str) -> list[dict]:
    """Download (or read from the `datasets` cache) the public copy of a known benchmark."""
    src = BENCHMARKS[name]
    try:
        import datasets
    except ImportError:
        raise EvalError(f"{name}: no local data and the 'datasets' library is not installed; {DATASETS_HINT}") from None
    rows: list[dict] = []
    try:
        for config in src.configs:
            part = datasets.load_dataset(src.dataset, config, split=src.split)
            for index, row in enumerate(part):
                row = dict(row)
                rows.append(
                    {
                        "id": src.make_id(row, config, index),
                        "problem": str(row[src.problem_field]),
                        "answer": str(row[src.answer_field]).strip(),
                    }
                )
    except Exception as e:  # network, hub, schema: all end the same way for the user
        raise EvalError(
            f"{name}: could not load {src.dataset} from the Hugging Face hub "
            f"({type(e).__name__}: {' '.join(str(e).split())[:200]}); {DATASETS_HINT}"
        ) from None
    return normalize_records(rows, source=src.dataset)
