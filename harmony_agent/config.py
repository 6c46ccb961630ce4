"""The loop's configuration: three small value types, one definition per default, one name per knob.

``PromptConfig`` says what goes into the prompt, ``Sampling`` how tokens are drawn, ``LoopConfig`` the budgets and
tool settings of a run. ``Agent``, ``solve``, the evals runner and the CLIs all take their defaults from here.
Each validates itself on construction, so a bad value fails before any model loads.

>>> LoopConfig(max_tool_calls=5).max_tokens
120000
>>> Sampling(temperature=-1)
Traceback (most recent call last):
...
ValueError: temperature must be >= 0 (0 is greedy), got -1
"""

from __future__ import annotations

import math
from dataclasses import dataclass

REASONING_EFFORTS = ("low", "medium", "high")

DEFAULT_REASONING_EFFORT = "high"
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0
DEFAULT_TOP_K = -1
DEFAULT_MAX_TOKENS = 120_000
DEFAULT_MAX_TOOL_CALLS = 100
#: The published runs' real limit (the tool description the model was trained with says 120 s).
DEFAULT_TOOL_TIMEOUT = 10.0
#: The published runs cut each output at 1000 characters with ``<output cut>``.
DEFAULT_MAX_OUTPUT_CHARS = 1000
DEFAULT_MAX_CONCURRENT = 256
#: Seconds a call may take beyond ``tool_timeout`` (opening a session, interrupting a cell) before the loop stops
#: waiting and answers it as a runtime failure; only a broken tool runtime ever reaches it.
DEFAULT_TOOL_GRACE = 60.0
#: Which logprobs vLLM returns for sampled tokens (its ``logprobs_mode``): ``raw_logprobs`` are the model's own
#: log-softmax, before temperature/top-k/top-p; ``processed_logprobs`` are the distribution actually sampled from.
LOGPROBS_MODES = ("raw_logprobs", "processed_logprobs")
DEFAULT_LOGPROBS_MODE = "raw_logprobs"


@dataclass(frozen=True)
class PromptConfig:
    """What goes into the prompt besides the problem.

    ``conversation_start_date`` defaults to today's date (as the gpt-oss chat template does); ``Agent`` pins it
    once when it is created, so a run that crosses midnight renders every prompt alike.

    >>> PromptConfig(reasoning_effort="low", python=False).reasoning_effort
    'low'
    """

    reasoning_effort: str = DEFAULT_REASONING_EFFORT
    python: bool = True
    conversation_start_date: str | None = None
    developer_instructions: str | None = None

    def __post_init__(self) -> None:
        if self.reasoning_effort not in REASONING_EFFORTS:
            raise ValueError(f"reasoning_effort={self.reasoning_effort!r} is not one of {', '.join(REASONING_EFFORTS)}")


@dataclass(frozen=True)
class Sampling:
    """Sampling settings shared by every request of a run (``top_k=-1``: off).

    ``logprobs_mode`` says which logprob is recorded for each sampled token (see :data:`LOGPROBS_MODES`); vLLM
    fixes it per engine, so an engine built with another mode is refused before the run starts.
    """

    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    top_k: int = DEFAULT_TOP_K
    logprobs: bool = True
    logprobs_mode: str = DEFAULT_LOGPROBS_MODE

    def __post_init__(self) -> None:
        if not (
            isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature >= 0
        ):
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not (isinstance(self.top_k, int) and (self.top_k == -1 or self.top_k >= 1)):
            raise ValueError(f"top_k must be -1 (off) or >= 1, got {self.top_k}")
        if self.logprobs_mode not in LOGPROBS_MODES:
            raise ValueError(
                f"logprobs_mode={self.logprobs_mode!r} is not one of {', '.join(LOGPROBS_MODES)} "
                "(raw: the model's log-softmax; processed: after temperature/top-k/top-p)"
            )


@dataclass(frozen=True)
class LoopConfig:
    """Budgets and tool settings of a run.

    ``max_tokens`` counts the model's sampled tokens only; the context window counts tool tokens too.
    """

    max_tokens: int = DEFAULT_MAX_TOKENS
    max_tool_calls: int = DEFAULT_MAX_TOOL_CALLS
    tool_timeout: float = DEFAULT_TOOL_TIMEOUT
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    tool_grace: float = DEFAULT_TOOL_GRACE

    def __post_init__(self) -> None:
        if not (isinstance(self.max_tokens, int) and self.max_tokens >= 1):
            raise ValueError(f"max_tokens must be an int >= 1, got {self.max_tokens!r}")
        if not (isinstance(self.max_tool_calls, int) and self.max_tool_calls >= 0):
            raise ValueError(f"max_tool_calls must be an int >= 0, got {self.max_tool_calls!r}")
        if not (
            isinstance(self.tool_timeout, (int, float))
            and math.isfinite(self.tool_timeout)
            and 0 < self.tool_timeout <= 86_400
        ):
            raise ValueError(f"tool_timeout must be seconds in (0, 86400], got {self.tool_timeout!r}")
        if not (isinstance(self.max_output_chars, int) and self.max_output_chars >= 1):
            raise ValueError(f"max_output_chars must be an int >= 1, got {self.max_output_chars!r}")
        if not (isinstance(self.max_concurrent, int) and self.max_concurrent >= 1):
            raise ValueError(f"max_concurrent must be an int >= 1, got {self.max_concurrent!r}")
        if not (isinstance(self.tool_grace, (int, float)) and math.isfinite(self.tool_grace) and self.tool_grace > 0):
            raise ValueError(f"tool_grace must be seconds > 0, got {self.tool_grace!r}")

    @property
    def tool_deadline(self) -> float:
        """Seconds after which the loop gives up on a call: ``tool_timeout + tool_grace``."""
        return float(self.tool_timeout) + float(self.tool_grace)
