"""The run skeleton shared by harmony-eval and harmony-generate.

A run is a list of :class:`Job` (one output folder each: a benchmark, or a generate chunk). Samples already on
disk are skipped; the rest of every job go through one agent (one engine) in one continuous
``agent.stream(...)``; each finished sample becomes an output line at once, and a seed's file is put in input
order as soon as it holds every problem. The agent is only built when something is left to generate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evals.config import EvalConfig
from evals.errors import EvalError, one_line, user_error_types
from evals.output import SampleStore, check_run_config
from evals.progress import Progress, engine_token_counter
from evals.records import build_record

__all__ = ["Job", "WorkItem", "AgentFactory", "render_prompt", "create_agent", "pending_items", "run_jobs"]

logger = logging.getLogger(__name__)

AgentFactory = Callable[..., Any]


@dataclass
class Job:
    """One output folder: its records in input order (each with a unique ``id``), their prompts by id, and
    the seeds wanted."""

    label: str
    store: SampleStore
    records: list[dict]
    prompts: dict[str, str]
    seeds: list[int]

    @property
    def ids(self) -> list[str]:
        return [r["id"] for r in self.records]


@dataclass
class WorkItem:
    """One sample to generate."""

    job: Job
    record: dict
    seed: int

    @property
    def key(self) -> tuple:
        return (self.job.label, self.record["id"], self.seed)


def render_prompt(template: str, record: Mapping[str, Any], where: str) -> str:
    """``template.format(**record)`` with errors that name the missing field or the brace problem."""
    try:
        return template.format(**record)
    except KeyError as e:
        name = e.args[0] if e.args else "?"
        fields = ", ".join(sorted(k for k in record if not k.startswith("__")))
        raise EvalError(
            f"{where}: the prompt template uses {{{name}}} but the record has no field {name!r} "
            f"(fields: {fields}); fix --prompt-template or the input"
        ) from None
    except (IndexError, ValueError, AttributeError) as e:
        raise EvalError(
            f"prompt template {template[:80]!r}: {one_line(e)}; name fields like {{problem}} and "
            "write literal braces as {{ and }}"
        ) from None


def default_agent_factory(**kwargs: Any) -> Any:
    """``harmony_agent.Agent(**kwargs)``."""
    from harmony_agent import Agent

    return Agent(**kwargs)


def create_agent(config: EvalConfig, factory: AgentFactory | None = None) -> Any:
    """Build the agent (loading the model); a model that cannot be loaded is one EvalError naming it."""
    if not config.model:
        raise EvalError("no model given; pass --model, e.g. --model openai/gpt-oss-120b")
    logger.info("loading %s ...", config.model)
    start = time.monotonic()
    try:
        agent = (factory or default_agent_factory)(**config.agent_kwargs())
    except user_error_types():
        raise
    except Exception as e:
        raise EvalError(
            f"cannot start the agent for model {config.model!r} ({type(e).__name__}: "
            f"{one_line(e)[:300]}); check --model (hub id or local folder) and the engine flags"
        ) from None
    logger.info("loaded %s in %.0f s", config.model, time.monotonic() - start)
    return agent


def pending_items(job: Job, seed: int) -> list[WorkItem]:
    """The samples of one seed not yet on disk. A seed with work is locked (and a torn tail cut) now, before
    any model loads, so a second process on the same files fails at once instead of after the load; a seed
    already complete is put in input order."""
    store = job.store
    if set(job.ids) <= store.done_ids(seed):
        store.put_in_order(seed, job.ids)
        return []
    store.open(seed)
    done = store.done_ids(seed)  # authoritative now that the file is ours
    return [WorkItem(job, rec, seed) for rec in job.records if rec["id"] not in done]


def _progress_enabled(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    import sys

    return sys.stderr.isatty()


def _stream(items: Sequence[WorkItem], agent: Any, config: EvalConfig, progress: Progress) -> None:
    """One ``agent.stream`` over every item; each result is written as it finishes, and each seed's file is put
    in input order when its last sample lands."""
    from harmony_agent import Task

    by_key = {item.key: item for item in items}
    left: dict[tuple[int, int], int] = {}
    for item in items:
        left[(id(item.job), item.seed)] = left.get((id(item.job), item.seed), 0) + 1
    tasks = [Task(problem=item.job.prompts[item.record["id"]], seed=item.seed, key=item.key) for item in items]
    stream = agent.stream(tasks)
    try:
        for task, result in stream:
            if task.key not in by_key:
                continue  # not ours or already written: never write a sample twice
            item = by_key.pop(task.key)
            rec = build_record(
                item.record,
                item.seed,
                item.job.prompts[item.record["id"]],
                result,
                save_tokens=config.save_tokens,
                grade_timeout=config.grade_timeout,
            )
            item.job.store.append(item.seed, rec)
            progress.update(rec)
            slot = (id(item.job), item.seed)
            left[slot] -= 1
            if not left[slot]:
                item.job.store.put_in_order(item.seed, item.job.ids)
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()  # on an error or Ctrl-C: the agent aborts what is still running
    if by_key:
        raise EvalError(
            f"the agent's stream ended with {len(by_key)} samples unfinished; run the same command again to resume them"
        )


def run_jobs(
    jobs: Sequence[Job], config: EvalConfig, *, title: str, agent: Any = None, agent_factory: AgentFactory | None = None
) -> int:
    """Generate every missing sample of `jobs`; returns how many were generated now.

    Refuses (EvalError) to add samples to a folder whose ``run-config.json`` records other sample settings.
    A caller's `agent` is left open; one built here (from `agent_factory`, default ``harmony_agent.Agent``)
    is closed.
    """
    settings = config.sample_settings()
    if agent is not None and config.model is None:
        settings.pop("model")
    owned = agent is None
    progress: Progress | None = None
    try:
        for job in jobs:
            check_run_config(job.store.directory, settings, write=False)
        items = [item for job in jobs for seed in job.seeds for item in pending_items(job, seed)]
        if not items:
            return 0
        if owned:
            agent = create_agent(config, agent_factory)
        for job in jobs:
            check_run_config(job.store.directory, settings, write=True)
        total = sum(len(job.records) * len(job.seeds) for job in jobs)
        pending = {(id(item.job), item.record["id"], item.seed) for item in items}
        earlier = [
            rec
            for job in jobs
            for seed in job.seeds
            for rec in job.store.records(seed)
            if (id(job), rec.get("id"), seed) not in pending and rec.get("id") in job.prompts
        ]
        progress = Progress(_progress_enabled(config.progress), title, total, earlier, engine_token_counter(agent))
        _stream(items, agent, config, progress)
        return len(items)
    finally:
        if progress is not None:
            progress.close()
        for job in jobs:
            job.store.close()
        if owned and agent is not None and hasattr(agent, "close"):
            agent.close()
