"""``EvalConfig``: everything one harmony-eval / harmony-generate run needs, on top of the agent's configuration.

The model's settings are the agent's own objects (``PromptConfig``, ``Sampling``, ``LoopConfig`` from
``harmony_agent.config``, where every default is defined); this adds the engine, the data, the output and the
grading. Both CLIs fill one from their flags; the Python API takes one or keyword overrides::

    config = EvalConfig.create(model="openai/gpt-oss-120b", temperature=0.6, num_samples=4)

Every value is checked on construction, so a bad one fails before any model loads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from evals.metrics import MAJORITY_MODES
from harmony_agent.agent import apply_shortcuts
from harmony_agent.config import LoopConfig, PromptConfig, Sampling

__all__ = ["AIME_PROMPT", "EvalConfig"]

AIME_PROMPT = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
"""The user message of the published AIME runs (a str.format template over the record's fields)."""

DEFAULT_GRADE_TIMEOUT = 5.0


@dataclass(frozen=True)
class EvalConfig:
    """One run's settings. ``prompt``/``sampling``/``loop`` are the agent's; the rest is the run's own.

    ``engine_kwargs`` go to ``vllm.LLM``. ``num_samples`` samples per problem use seeds ``seed`` ..
    ``seed + num_samples - 1``. ``answer_field=None`` (harmony-generate without ``--answer-field``) skips grading.
    ``majority`` is how majority@k groups answers: ``normalized`` (``204`` and ``0204`` are one answer) or
    ``raw`` (NeMo-Skills' raw strings). ``progress=None`` shows the bar when stderr is a terminal.
    """

    model: str | None = None
    engine_kwargs: Mapping[str, Any] = field(default_factory=dict)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    sampling: Sampling = field(default_factory=Sampling)
    loop: LoopConfig = field(default_factory=LoopConfig)
    prompt_template: str = AIME_PROMPT
    num_samples: int = 16
    seed: int = 0
    limit: int | None = None
    data_dir: str | None = None
    problem_field: str = "problem"
    answer_field: str | None = "answer"
    id_field: str = "id"
    output_dir: str = "results"
    save_tokens: bool = False
    grade_timeout: float = DEFAULT_GRADE_TIMEOUT
    majority: str = "normalized"
    progress: bool | None = None

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise ValueError(f"{name} must be {what}, got {getattr(self, name)!r}")

        need(
            self.model is None or (isinstance(self.model, str) and bool(self.model.strip())),
            "model",
            "a hub name or a local folder",
        )
        need(isinstance(self.num_samples, int) and self.num_samples >= 1, "num_samples", "an int >= 1")
        need(isinstance(self.seed, int) and self.seed >= 0, "seed", "an int >= 0")
        need(self.limit is None or (isinstance(self.limit, int) and self.limit >= 1), "limit", "None or an int >= 1")
        need(isinstance(self.grade_timeout, (int, float)) and self.grade_timeout > 0, "grade_timeout", "seconds > 0")
        need(self.majority in MAJORITY_MODES, "majority", f"one of {', '.join(MAJORITY_MODES)}")
        need(
            isinstance(self.prompt_template, str) and bool(self.prompt_template),
            "prompt_template",
            "a non-empty str.format template",
        )
        for name, kind in (("prompt", PromptConfig), ("sampling", Sampling), ("loop", LoopConfig)):
            need(isinstance(getattr(self, name), kind), name, f"a {kind.__name__}")
        object.__setattr__(self, "engine_kwargs", dict(self.engine_kwargs))

    @classmethod
    def create(cls, base: EvalConfig | None = None, **overrides: Any) -> EvalConfig:
        """`base` (default: the defaults) with `overrides`: this class's fields, or any field of
        ``PromptConfig``/``Sampling``/``LoopConfig`` by name (``temperature=0.6``, ``max_tool_calls=5``)."""
        base = base or cls()
        own = {f.name for f in fields(cls)}
        agent_names = {f.name for obj in (base.prompt, base.sampling, base.loop) for f in fields(obj)}
        unknown = sorted(set(overrides) - own - agent_names)
        if unknown:
            raise TypeError(f"unknown setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(own | agent_names))}")
        mine = {k: v for k, v in overrides.items() if k in own}
        prompt, sampling, loop = apply_shortcuts(
            mine.pop("prompt", base.prompt),
            mine.pop("sampling", base.sampling),
            mine.pop("loop", base.loop),
            {k: v for k, v in overrides.items() if k not in own},
        )
        return replace(base, prompt=prompt, sampling=sampling, loop=loop, **mine)

    def agent_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``harmony_agent.Agent``; logprobs are only asked for when they are saved
        (they cost a Python object per token in vLLM's output)."""
        return {
            "model": self.model,
            "engine_kwargs": dict(self.engine_kwargs),
            "prompt": self.prompt,
            "sampling": replace(self.sampling, logprobs=self.save_tokens),
            "loop": self.loop,
        }

    def sample_settings(self) -> dict[str, Any]:
        """What shapes the samples (engine layout, data source, output and concurrency excluded), stored in
        ``run-config.json``: resuming with other values is refused. Keys are the CLI's flag names."""
        settings: dict[str, Any] = {
            "model": self.model,
            "python": self.prompt.python,
            "reasoning_effort": self.prompt.reasoning_effort,
            "temperature": self.sampling.temperature,
            "top_p": self.sampling.top_p,
            "tokens_to_generate": self.loop.max_tokens,
            "max_code_executions": self.loop.max_tool_calls,
            "code_timeout": self.loop.tool_timeout,
            "max_code_output_chars": self.loop.max_output_chars,
            "prompt_template": self.prompt_template,
        }
        # settings newer than the first run-config.json files: recorded only when set, so older folders resume
        if self.sampling.top_k != Sampling().top_k:
            settings["top_k"] = self.sampling.top_k
        if self.prompt.developer_instructions is not None:
            settings["developer_instructions"] = self.prompt.developer_instructions
        return settings

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (nested objects as dicts)."""
        return dataclasses.asdict(self)
