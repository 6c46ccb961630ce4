"""One output line per sample, built from a ``harmony_agent.Result``: NeMo-Skills' fields plus ours.

``generation`` is the response decoded with its Harmony special tokens (what the model saw); ``messages`` the
same response as parsed messages (role, name, channel, recipient, text) after the user message, so that
synthetic-data users get the conversation without parsing Harmony markup.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evals.grading import is_equivalent
from harmony_agent.render import message_views

__all__ = ["build_record", "TIMEOUT_STATUS"]

TIMEOUT_STATUS = "timeout"


def build_record(
    base: Mapping[str, Any],
    seed: int,
    prompt: str,
    result: Any,
    *,
    save_tokens: bool = False,
    grade_timeout: float = 5.0,
) -> dict[str, Any]:
    """The input fields plus generation, messages, answer, grade, token counts, tool stats and times."""
    predicted = result.answer
    calls = list(result.tool_calls)
    rec: dict[str, Any] = dict(base)
    rec["seed"] = seed
    rec["generation"] = result.response_text
    rec["messages"] = [
        {"role": "user", "name": None, "channel": None, "recipient": None, "text": prompt},
        *(m.to_dict() for m in message_views(result.messages)),
    ]
    rec["predicted_answer"] = predicted
    if "expected_answer" in base:
        rec["symbolic_correct"] = is_equivalent(predicted, base["expected_answer"], timeout=grade_timeout)
    rec.update(
        {
            "num_generated_tokens": int(result.num_model_tokens),
            "num_tool_tokens": int(result.trajectory.num_tool_tokens),
            "code_rounds_executed": len(calls),
            "num_code_timeouts": sum(c.status == TIMEOUT_STATUS for c in calls),
            "code_execution_time": round(sum(float(c.seconds) for c in calls), 4),
            "tool_calls": [{"status": c.status, "seconds": round(float(c.seconds), 4)} for c in calls],
            "finish_reason": result.finish_reason,
            "generation_start_time": result.started_at,
            "generation_end_time": result.finished_at,
            "error": result.error,
        }
    )
    if save_tokens:
        rec["tokens"] = result.trajectory.to_rl()
    return rec
