"""The outcome of one trajectory: answer, messages, tool calls and the exact token trajectory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .answer import extract_boxed
from .encoding import get_encoding
from .parsing import message_text
from .trajectory import Trajectory

FINISH_REASONS = ("final", "length", "context", "max_tool_calls", "error")


#: ``ok``/``error`` (the cell raised)/``timeout``/``crashed`` come from the session; ``runtime_error``: the tool
#: runtime failed to run the call (no session, a broken session object); ``error`` then says what happened.
TOOL_STATUSES = ("ok", "error", "timeout", "crashed", "runtime_error")


@dataclass(frozen=True)
class ToolCallRecord:
    """One python call: the code, what the model read back, and how it went (``status`` in TOOL_STATUSES)."""

    code: str
    output: str
    status: str
    seconds: float
    state_lost: bool
    error: str | None = None


@dataclass
class Result:
    """What :meth:`Agent.stream` yields per trajectory.

    ``messages`` are the Harmony messages after the prompt (assistant and tool), parsed from the tokens.
    ``finish_reason``: ``final`` (the model answered), ``length`` (generation budget), ``context`` (the context
    window is full), ``max_tool_calls`` (it kept calling after being told no executions were left), ``error``
    (a fault confined to this trajectory ended it: a malformed engine output, a failed request, a bug; ``error``
    says what, and the other trajectories of the run went on).
    ``problem`` is the task's input: a problem string or the list of messages it was given.
    ``prompt_tokens_prefilled`` / ``prompt_tokens_cached``: over all of the trajectory's requests (the first
    prompt and every re-submission after a tool call), the prompt tokens the engine computed and those it reused
    from its prefix cache; their sum is every prompt token submitted. What the tool turns cost in prefill.
    """

    problem: Any
    seed: int | None
    trajectory: Trajectory
    messages: list = field(default_factory=list)
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    finish_reason: str = "final"
    started_at: float = 0.0
    finished_at: float = 0.0
    error: str | None = None
    prompt_tokens_prefilled: int = 0
    prompt_tokens_cached: int = 0

    @property
    def final_text(self) -> str:
        """Text of the last ``final``-channel message ('' when the model gave none)."""
        for message in reversed(self.messages):
            if message.channel == "final" and message.author.role.value == "assistant":
                return message_text(message)
        return ""

    @property
    def answer(self) -> str | None:
        """The last ``\\boxed{...}`` of the final text, else of everything the model wrote; None if none."""
        found = extract_boxed(self.final_text)
        if found is None:
            found = extract_boxed(self.model_text)
        return found

    @property
    def model_text(self) -> str:
        """Everything the assistant wrote, message by message, without tool messages."""
        return "\n".join(message_text(m) for m in self.messages if m.author.role.value == "assistant")

    @property
    def response_text(self) -> str:
        """The whole response (model and tool tokens) decoded with its special tokens, as the model saw it."""
        return get_encoding().decode(self.trajectory.response_ids)

    @property
    def num_model_tokens(self) -> int:
        return self.trajectory.num_model_tokens

    @property
    def num_tool_tokens(self) -> int:
        return self.trajectory.num_tool_tokens

    @property
    def seconds(self) -> float:
        return self.finished_at - self.started_at

    # Display (harmony_agent.render): readable text for print(), a rich view, and a short repr without token ids.
    def __str__(self) -> str:
        from .render import render_text

        return render_text(self)

    def __rich__(self):
        from .render import render_rich

        return render_rich(self)

    def __repr__(self) -> str:
        from .render import short_repr

        return short_repr(self)
