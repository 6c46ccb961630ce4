"""run_eval: benchmarks -> tasks -> one ``agent.stream(...)`` -> graded records on disk -> metrics.

Every sample of every benchmark goes through one agent (one engine) in one continuous stream; each
finished sample is graded and appended to ``<output-dir>/eval-results/<bench>/output-rs<seed>.jsonl`` as
soon as it finishes, and samples already on disk are skipped, so the same call resumes an interrupted run.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from evals.data import BenchmarkSpec, load_benchmark, parse_benchmarks
from evals.errors import EvalError, one_line, user_error_types
from evals.grading import extract_answer, is_equivalent
from evals.metrics import compute_metrics
from evals.output import SampleStore, check_run_config, write_json_atomic

__all__ = [
    "AIME_PROMPT", "AgentSettings", "WorkItem", "run_eval", "run_items", "create_agent", "render_prompt",
    "build_record", "transcript_text", "ProgressBar", "make_task", "pending_items", "eval_results_dir",
    "benchmark_metrics",
]

AIME_PROMPT = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
"""The user message of the published AIME runs (a str.format template over the record's fields)."""

AgentFactory = Callable[..., Any]


@dataclass
class AgentSettings:
    """The agent knobs of the published run, shared by harmony-eval and harmony-generate."""

    model: Optional[str] = None
    python: bool = True
    reasoning_effort: str = "high"
    temperature: float = 1.0
    top_p: float = 1.0
    tokens_to_generate: int = 120000
    max_code_executions: int = 100
    code_timeout: float = 10.0
    max_code_output_chars: int = 1000
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    max_concurrent: Optional[int] = None  # trajectories in flight at once (None: the Agent's default)
    # sampled-token logprobs: only worth their cost (a Python object per token in vLLM's output) when saved
    logprobs: bool = False

    def agent_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``harmony_agent.Agent`` (docs/architecture.md)."""
        kwargs = {
            "model": self.model,
            "engine_kwargs": dict(self.engine_kwargs),
            "python": self.python,
            "reasoning_effort": self.reasoning_effort,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.tokens_to_generate,
            "max_tool_calls": self.max_code_executions,
            "tool_timeout": self.code_timeout,
            "max_output_chars": self.max_code_output_chars,
            "logprobs": self.logprobs,
        }
        if self.max_concurrent is not None:
            kwargs["max_concurrent"] = self.max_concurrent
        return kwargs

    def sample_config(self) -> dict[str, Any]:
        """The settings that shape samples (engine layout excluded): resuming must not change them."""
        cfg = asdict(self)
        cfg.pop("engine_kwargs")
        cfg.pop("max_concurrent")
        cfg.pop("logprobs")
        return cfg


def make_task(problem: str, seed: int, key: tuple) -> Any:
    """A ``harmony_agent.Task`` for one sample."""
    from harmony_agent import Task

    return Task(problem=problem, seed=seed, key=key)


def default_agent_factory(**kwargs: Any) -> Any:
    """``harmony_agent.Agent(**kwargs)``."""
    from harmony_agent import Agent

    return Agent(**kwargs)


def create_agent(settings: AgentSettings, factory: Optional[AgentFactory] = None) -> Any:
    """Build the agent; a model that cannot be loaded becomes one EvalError line naming the model."""
    if not settings.model:
        raise EvalError("no model given; pass --model, e.g. --model openai/gpt-oss-120b")
    factory = factory or default_agent_factory
    try:
        return factory(**settings.agent_kwargs())
    except user_error_types():
        raise
    except Exception as e:
        raise EvalError(f"cannot start the agent for model {settings.model!r} ({type(e).__name__}: "
                        f"{one_line(e)[:300]}); check --model (hub id or local folder) and the flags") from None


def render_prompt(template: str, record: Mapping[str, Any], where: str) -> str:
    """``template.format(**record)`` with errors that name the missing field or the brace problem."""
    try:
        return template.format(**record)
    except KeyError as e:
        name = e.args[0] if e.args else "?"
        fields = ", ".join(sorted(k for k in record if not k.startswith("__")))
        raise EvalError(f"{where}: the prompt template uses {{{name}}} but the record has no field {name!r} "
                        f"(fields: {fields}); fix --prompt-template or the input") from None
    except (IndexError, ValueError, AttributeError) as e:
        raise EvalError(f"prompt template {template[:80]!r}: {one_line(e)}; name fields like {{problem}} and "
                        "write literal braces as {{ and }}") from None


# ------------------------------------------------------------------------------------------------ records

def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _value(x: Any) -> Any:
    return getattr(x, "value", x)


def _message_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        return str(content.get("text", ""))
    if isinstance(content, Iterable):
        return "".join(_message_text(c) if not hasattr(c, "text") else str(c.text) for c in content)
    return str(getattr(content, "text", content))


def transcript_text(result: Any) -> str:
    """The completion as text: the response after the prompt, model and tool messages, in Harmony markup.

    ``result.response_text`` (the response tokens decoded with their special tokens) when the agent has it,
    else a rendering of ``result.messages`` (openai_harmony ``Message`` objects or their dicts), else
    ``result.final_text``.
    """
    try:
        value = getattr(result, "response_text", None)
    except Exception:  # e.g. decoding needs the vocabulary
        value = None
    if isinstance(value, str):
        return value
    parts: list[str] = []
    for m in _get(result, "messages") or []:
        d = m.to_dict() if hasattr(m, "to_dict") else m
        if not isinstance(d, Mapping):
            parts.append(str(d))
            continue
        author = d.get("author")
        role = str(_value(d.get("role") or _get(author, "role") or ""))
        if role in ("system", "developer", "user"):
            continue
        name = d.get("name") or _get(author, "name")
        head = str(name) if role == "tool" and name else role
        if d.get("recipient"):
            head += f" to={d['recipient']}"
        channel = f"<|channel|>{d['channel']}" if d.get("channel") else ""
        parts.append(f"<|start|>{head}{channel}<|message|>{_message_text(d.get('content'))}<|end|>")
    if parts:
        return "".join(parts)
    return str(_get(result, "final_text") or "")


def _tool_stats(tool_calls: Sequence[Any]) -> tuple[int, int, float]:
    """(rounds, timeouts, seconds) of a result's tool calls (each carries status/seconds or a result)."""
    timeouts, seconds = 0, 0.0
    for call in tool_calls:
        inner = _get(call, "result")
        src = inner if inner is not None and _get(call, "status") is None else call
        if _get(src, "status") == "timeout" or _get(src, "timed_out"):
            timeouts += 1
        seconds += float(_get(src, "seconds") or 0.0)
    return len(tool_calls), timeouts, seconds


def _jsonable(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def _token_data(result: Any) -> dict[str, Any]:
    """Token ids, loss mask and logprobs of the trajectory (``trajectory.to_rl()``)."""
    traj = _get(result, "trajectory")
    if traj is not None and hasattr(traj, "to_rl"):
        return _jsonable(dict(traj.to_rl()))
    return {}


def build_record(base: Mapping[str, Any], seed: int, result: Any, *, save_tokens: bool = False,
                 grade_timeout: float = 5.0) -> dict[str, Any]:
    """One output line: the input fields plus generation, answer, grade, token counts, tool stats, times."""
    generation = transcript_text(result)
    # The model's own text when the agent separates it (tool output cannot supply the answer), as Result.answer.
    model_text = _get(result, "model_text")
    predicted = extract_answer(model_text if isinstance(model_text, str) else generation,
                               final_text=_get(result, "final_text"))
    if predicted is None and _get(result, "answer"):
        predicted = str(_get(result, "answer"))
    rounds, timeouts, seconds = _tool_stats(list(_get(result, "tool_calls") or []))
    rec: dict[str, Any] = dict(base)
    rec["seed"] = seed
    rec["generation"] = generation
    rec["predicted_answer"] = predicted
    if "expected_answer" in base:
        rec["symbolic_correct"] = is_equivalent(predicted, base["expected_answer"], timeout=grade_timeout)
    rec.update({
        "num_generated_tokens": int(_get(result, "num_model_tokens") or 0),
        "num_tool_tokens": int(_get(result, "num_tool_tokens") or 0),
        "code_rounds_executed": rounds,
        "num_code_timeouts": timeouts,
        "code_execution_time": round(seconds, 4),
        "finish_reason": _get(result, "finish_reason"),
        "generation_start_time": _get(result, "started_at"),
        "generation_end_time": _get(result, "finished_at"),
        "error": _get(result, "error"),
    })
    if save_tokens:
        rec["tokens"] = _token_data(result)
    return rec


# ------------------------------------------------------------------------------------------------ the loop

@dataclass
class WorkItem:
    """One sample to generate: its record, seed, prompt, where it is written, and its task key."""

    store: SampleStore
    record: dict
    seed: int
    prompt: str
    key: tuple


class ProgressBar:
    """Rich progress bar: samples done/total, tokens/s, tool calls, running accuracy."""

    def __init__(self, enabled: bool, title: str, total: int, done: int) -> None:
        self.tokens = self.tool_calls = self.graded = self.correct = 0
        self.start = time.monotonic()
        self._bar = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TextColumn("{task.fields[stats]}"),
                             console=Console(stderr=True), transient=False)
        self._bar.start()
        self._task = self._bar.add_task(title, total=total, completed=done, stats="")

    def update(self, rec: Mapping[str, Any]) -> None:
        self.tokens += int(rec.get("num_generated_tokens") or 0)
        self.tool_calls += int(rec.get("code_rounds_executed") or 0)
        if "symbolic_correct" in rec:
            self.graded += 1
            self.correct += bool(rec["symbolic_correct"])
        if self._bar is not None:
            rate = self.tokens / max(time.monotonic() - self.start, 1e-9)
            acc = f"{100.0 * self.correct / self.graded:.1f}%" if self.graded else "-"
            self._bar.update(self._task, advance=1,
                             stats=f"{rate:,.0f} tok/s  {self.tool_calls} tool calls  acc {acc}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def run_items(items: Sequence[WorkItem], agent: Any, *, save_tokens: bool = False, grade_timeout: float = 5.0,
              progress: Optional[ProgressBar] = None) -> int:
    """Stream all items through `agent` in one ``agent.stream(tasks)``; append each record as it finishes.

    Returns the number of samples written.
    """
    by_key = {item.key: item for item in items}
    tasks = [make_task(item.prompt, item.seed, item.key) for item in items]
    written = 0
    stream = agent.stream(tasks)
    try:
        for task, result in stream:
            key = _get(task, "key")
            item = by_key.pop(tuple(key) if isinstance(key, list) else key, None)
            if item is None:
                continue  # not ours or already written: never write a sample twice
            rec = build_record(item.record, item.seed, result, save_tokens=save_tokens, grade_timeout=grade_timeout)
            item.store.append(item.seed, rec)
            written += 1
            if progress is not None:
                progress.update(rec)
    finally:
        if hasattr(stream, "close"):
            stream.close()  # on an error or Ctrl-C: the agent aborts what is still running
    if by_key:
        raise EvalError(f"the agent's stream ended with {len(by_key)} samples unfinished; run the same command "
                        "again to resume them")
    return written


def pending_items(store: SampleStore, seed: int, records: Sequence[dict], prompts: Mapping[str, str],
             label: str) -> list[WorkItem]:
    """The samples of one seed not yet on disk. A seed with work is locked (and a torn tail cut) now, before
    any model loads, so a second process on the same files fails at once instead of after the load."""
    if {r["id"] for r in records} <= store.done_ids(seed):
        return []
    store.open(seed)
    done = store.done_ids(seed)  # authoritative now that the file is ours
    return [WorkItem(store, rec, seed, prompts[rec["id"]], (label, rec["id"], seed))
            for rec in records if rec["id"] not in done]


def eval_results_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "eval-results"


def benchmark_metrics(store: SampleStore, ids: Optional[set[str]] = None) -> dict[str, dict[str, Any]]:
    """Metrics of the samples in one benchmark folder (only problems in `ids` when given)."""
    records = [r for r in store.all_records() if ids is None or str(r.get("id")) in ids]
    return compute_metrics(records)


def _progress_enabled(progress: Optional[bool]) -> bool:
    if progress is not None:
        return progress
    import sys

    return sys.stderr.isatty()


def run_eval(
    benchmarks: str | Sequence[str] = "aime24",
    *,
    model: Optional[str] = None,
    output_dir: str | Path = "results",
    num_samples: int = 16,
    seed: int = 0,
    limit: Optional[int] = None,
    data_dir: Optional[str | Path] = None,
    input_file: Optional[str | Path] = None,
    problem_field: str = "problem",
    answer_field: str = "answer",
    id_field: str = "id",
    prompt_template: str = AIME_PROMPT,
    python: bool = True,
    reasoning_effort: str = "high",
    temperature: float = 1.0,
    top_p: float = 1.0,
    tokens_to_generate: int = 120000,
    max_code_executions: int = 100,
    code_timeout: float = 10.0,
    max_code_output_chars: int = 1000,
    engine_kwargs: Optional[Mapping[str, Any]] = None,
    max_concurrent: Optional[int] = None,
    save_tokens: bool = False,
    grade_timeout: float = 5.0,
    agent: Any = None,
    agent_factory: Optional[AgentFactory] = None,
    progress: Optional[bool] = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Evaluate, resuming whatever is already in `output_dir`; returns ``{bench: {mode: metrics}}``.

    `benchmarks` is ``"aime24:16,aime25:16"`` style (a bare name takes `num_samples`); `input_file` adds a
    JSONL benchmark. Sample j uses seed ``seed + j``. Pass a ready `agent` (anything with
    ``.stream(tasks)``) or an `agent_factory` called with ``harmony_agent.Agent``'s keyword arguments; the
    agent is only built when there is something left to generate. ``metrics.json`` is written into each
    benchmark's folder.
    """
    specs: list[BenchmarkSpec] = parse_benchmarks(benchmarks) if benchmarks else []
    if input_file is not None:
        extra = BenchmarkSpec(Path(input_file).stem, None, str(input_file))
        if any(s.name == extra.name for s in specs):
            raise EvalError(f"benchmark {extra.name!r} is given twice; list each benchmark once")
        specs.append(extra)
    if not specs:
        raise EvalError("no benchmark given; name one (aime24, aime25, jsonl:PATH) or pass --input-file")
    if num_samples < 1:
        raise EvalError("--num-samples must be at least 1")
    if limit is not None and limit < 1:
        raise EvalError("--limit must be at least 1")
    settings = AgentSettings(model, python, reasoning_effort, temperature, top_p, tokens_to_generate,
                             max_code_executions, code_timeout, max_code_output_chars, dict(engine_kwargs or {}),
                             max_concurrent, logprobs=save_tokens)
    config = {**settings.sample_config(), "prompt_template": prompt_template}
    if agent is not None and model is None:
        config.pop("model")

    root = eval_results_dir(output_dir)
    plan: list[tuple[str, SampleStore, list[dict], int]] = []
    items: list[WorkItem] = []
    total = 0
    owned = agent is None
    bar: Optional[ProgressBar] = None
    try:
        for spec in specs:
            records = load_benchmark(spec.name, data_dir=data_dir, path=spec.path, problem_field=problem_field,
                                     answer_field=answer_field, id_field=id_field)
            if limit is not None:
                records = records[:limit]
            n = spec.num_samples or num_samples
            store = SampleStore(root / spec.name)
            plan.append((spec.name, store, records, n))
            check_run_config(store.directory, config, write=False)
            total += len(records) * n
            prompts = {r["id"]: render_prompt(prompt_template, r, f"{spec.name} record {r['id']!r}") for r in records}
            for s in range(seed, seed + n):
                items += pending_items(store, s, records, prompts, spec.name)
        if items:
            if owned:
                agent = create_agent(settings, agent_factory)
            for _name, store, _records, _n in plan:
                check_run_config(store.directory, config, write=True)
            bar = ProgressBar(_progress_enabled(progress), ",".join(p[0] for p in plan), total, total - len(items))
            run_items(items, agent, save_tokens=save_tokens, grade_timeout=grade_timeout, progress=bar)
    finally:
        if bar is not None:
            bar.close()
        for _name, store, _records, _n in plan:
            store.close()
        if owned and agent is not None and hasattr(agent, "close"):
            agent.close()

    metrics: dict[str, dict[str, dict[str, Any]]] = {}
    for name, store, records, _n in plan:
        modes = benchmark_metrics(store, {r["id"] for r in records})
        write_json_atomic(store.directory / "metrics.json", {name: modes})
        metrics[name] = modes
    return metrics
