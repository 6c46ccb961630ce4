"""``run_eval``: benchmarks -> one resumable run (evals.runner) -> metrics per benchmark folder.

Output: ``<output_dir>/eval-results/<bench>/output-rs<seed>.jsonl`` (one line per problem, input order once
complete) and ``metrics.json`` beside them, the layout NeMo-Skills' ``summarize_results`` reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evals.config import EvalConfig
from evals.data import BenchmarkSpec, load_benchmark, parse_benchmarks
from evals.errors import EvalError
from evals.output import SampleStore
from evals.runner import AgentFactory, Job, render_prompt, run_jobs
from evals.summarize import score_folder

__all__ = ["run_eval", "eval_results_dir", "benchmark_specs", "benchmark_jobs"]


def eval_results_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "eval-results"


def benchmark_specs(benchmarks: str | Sequence[str], input_file: str | Path | None = None) -> list[BenchmarkSpec]:
    """The benchmarks of a run: ``"aime24:16,aime25:16"`` style, plus `input_file` as one named after it."""
    specs = parse_benchmarks(benchmarks) if benchmarks else []
    if input_file is not None:
        extra = BenchmarkSpec(Path(input_file).stem, None, str(input_file))
        if any(s.name == extra.name for s in specs):
            raise EvalError(f"benchmark {extra.name!r} is given twice; list each benchmark once")
        specs.append(extra)
    if not specs:
        raise EvalError("no benchmark given; name one (aime24, aime25, jsonl:PATH) or pass --input-file")
    return specs


def benchmark_jobs(specs: Sequence[BenchmarkSpec], config: EvalConfig) -> list[Job]:
    """Load each benchmark (first `limit` problems) and render its prompts: one job per benchmark folder."""
    jobs = []
    root = eval_results_dir(config.output_dir)
    for spec in specs:
        records = load_benchmark(
            spec.name,
            data_dir=config.data_dir,
            path=spec.path,
            problem_field=config.problem_field,
            answer_field=config.answer_field or "answer",
            id_field=config.id_field,
        )
        if config.limit is not None:
            records = records[: config.limit]
        prompts = {
            r["id"]: render_prompt(config.prompt_template, r, f"{spec.name} record {r['id']!r}") for r in records
        }
        n = spec.num_samples or config.num_samples
        jobs.append(
            Job(spec.name, SampleStore(root / spec.name), records, prompts, list(range(config.seed, config.seed + n)))
        )
    return jobs


def run_eval(
    benchmarks: str | Sequence[str] = "aime24",
    config: EvalConfig | None = None,
    *,
    input_file: str | Path | None = None,
    agent: Any = None,
    agent_factory: AgentFactory | None = None,
    **overrides: Any,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Evaluate, resuming whatever is already in the output dir; returns ``{bench: {mode: row}}``.

    Settings come from `config` and/or keyword `overrides` (`EvalConfig` fields, or any field of the agent's
    ``PromptConfig``/``Sampling``/``LoopConfig``: ``run_eval("aime24", model=..., temperature=0.6)``). Pass a
    ready `agent` (anything with ``.stream(tasks)``; left open) or an `agent_factory` called with
    ``harmony_agent.Agent``'s keyword arguments; the agent is only built when something is left to generate.
    """
    config = EvalConfig.create(config, **overrides)
    jobs = benchmark_jobs(benchmark_specs(benchmarks, input_file), config)
    run_jobs(jobs, config, title=",".join(job.label for job in jobs), agent=agent, agent_factory=agent_factory)
    return {job.label: score_folder(job.store.directory, job.ids, majority=config.majority) for job in jobs}
