"""A fake `harmony_agent.Agent` for the evals tests: ``.stream(tasks)`` -> ``(task, Result)``.

The results are real ``harmony_agent.Result`` objects (real token ``Trajectory``, Harmony messages parsed from
those tokens, ``ToolCallRecord``s), made without a model. It answers AIME problems from the shared data: mostly
right, sometimes wrong, sometimes without a box, deterministically per (problem, seed), yielding in a shuffled
(not submission) order. Run as a module it is
the harmony-eval / harmony-generate CLI with this agent (for subprocess tests):
``python -m tests.evals_fake_agent eval|generate ARGS...`` (env FAKE_DELAY seconds per sample, FAKE_LOG a
file that gets one line per task received).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA = Path(os.environ.get("HARMONY_EVAL_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def _answers() -> dict[str, str]:
    out = {}
    for name in ("aime24", "aime25"):
        path = DATA / f"{name}.jsonl"
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                out[row["problem"]] = str(row["answer"])
    return out


def outcome(problem: str, seed: int) -> str:
    """'right', 'wrong' or 'none' for one sample, a fixed function of the problem text and seed."""
    h = (zlib.crc32(problem.encode()) + 7 * seed) % 10
    return "wrong" if h in (0, 1) else "none" if h == 2 else "right"


def _model_segment(markup: str) -> list[int]:
    """Tokens the model would sample for `markup` (Harmony special tokens written out)."""
    from harmony_agent.encoding import get_encoding

    return list(get_encoding().encode(markup, allowed_special="all"))


def fake_result(
    problem: str,
    seed: int,
    final: str,
    calls: list[tuple[str, str, str, float]],
    finish_reason: str = "final",
    padding: int = 0,
):
    """A real ``harmony_agent.Result`` built the way the scheduler builds one: the prompt rendered to tokens, each
    python call sampled (``<|call|>``) then answered by a rendered tool message, then the final message; the
    messages parsed from those tokens. `calls` are (code, output, status, seconds); `padding` adds analysis
    tokens so that token counts differ between samples."""
    from harmony_agent import PromptConfig, Result, ToolCallRecord, Trajectory
    from harmony_agent import tool_messages as tm
    from harmony_agent.parsing import parse_completion
    from harmony_agent.prompt import render_prompt

    trajectory = Trajectory.from_prompt(render_prompt(problem, PromptConfig(conversation_start_date="2025-01-01")))
    messages, records = [], []
    thinking = "Let me think. " + "step " * padding
    for i, (code, output, status, seconds) in enumerate(calls):
        prefix = f"<|channel|>analysis<|message|>{thinking}<|end|><|start|>assistant" if i == 0 else ""
        ids = _model_segment(f"{prefix}<|channel|>analysis to=python code<|message|>{code}<|call|>")
        trajectory.append_model(ids, [-0.5] * len(ids))
        messages += parse_completion(ids).messages
        reply = tm.tool_message("python", output, "analysis")
        trajectory.append_tool(tm.render_reply(reply))
        messages.append(reply)
        records.append(ToolCallRecord(code=code, output=output, status=status, seconds=seconds, state_lost=False))
    end = "<|return|>" if finish_reason == "final" else ""
    ids = _model_segment(f"<|channel|>final<|message|>{final}{end}")
    trajectory.append_model(ids, [-0.25] * len(ids))
    messages += parse_completion(ids).messages
    now = time.time()
    return Result(
        problem=problem,
        seed=seed,
        trajectory=trajectory,
        messages=messages,
        tool_calls=records,
        finish_reason=finish_reason,
        started_at=now - 1.0,
        finished_at=now,
    )


@dataclass
class FakeAgent:
    """Answers from the AIME data; `kwargs` keeps what the factory was called with."""

    delay: float = 0.0
    kwargs: dict[str, Any] = field(default_factory=dict)
    received: list[Any] = field(default_factory=list)
    closed: bool = False
    log: str | None = None

    def __post_init__(self) -> None:
        self.answers = _answers()

    def result_for(self, task: Any):
        problem = task.problem.split("\nPlease reason step by step")[0]
        truth = self.answers.get(problem)
        m = re.search(r"ANSWER=(\S+)", task.problem)  # generate tests put the answer in the prompt
        truth = truth if truth is not None else (m.group(1) if m else "0")
        kind = outcome(problem, task.seed)
        said = {"right": truth, "wrong": str(int(truth) + 1) if truth.isdigit() else truth + "1", "none": None}[kind]
        final = f"The answer is $\\boxed{{{said}}}$." if said is not None else "I could not finish."
        calls = [
            ("print(1)", "1\n", "ok", 0.25),
            ("while True: pass", "Execution timed out after 10.0 seconds", "timeout", 10.0),
        ]
        return fake_result(
            task.problem,
            task.seed,
            final,
            calls,
            "final" if said is not None else "length",
            padding=(zlib.crc32(problem.encode()) + task.seed) % 50,
        )

    def stream(self, tasks: Any):
        tasks = list(tasks)
        self.received.extend(tasks)
        order = sorted(tasks, key=lambda t: zlib.crc32(repr(t.key).encode()))  # not submission order
        for task in order:
            if self.delay:
                time.sleep(self.delay)
            if self.log:
                with open(self.log, "a") as f:
                    f.write(json.dumps(list(task.key)) + "\n")
            yield task, self.result_for(task)

    def close(self) -> None:
        self.closed = True


class FakeFactory:
    """``agent_factory`` for `main`: records the keyword arguments and the agents it made."""

    def __init__(self, **agent_options: Any) -> None:
        self.options = agent_options
        self.agents: list[FakeAgent] = []
        self.calls: list[dict[str, Any]] = []
        self.raw_calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> FakeAgent:
        from dataclasses import asdict

        from harmony_agent import LoopConfig, PromptConfig, Sampling

        agent = FakeAgent(kwargs=kwargs, **self.options)
        self.agents.append(agent)
        if not kwargs:  # made by hand for run_eval(agent=...)
            return agent
        self.raw_calls.append(kwargs)
        assert isinstance(kwargs["prompt"], PromptConfig) and isinstance(kwargs["sampling"], Sampling)
        assert isinstance(kwargs["loop"], LoopConfig)
        # flattened for the tests: every knob by its name in harmony_agent.config
        self.calls.append(
            {
                "model": kwargs["model"],
                "engine_kwargs": kwargs["engine_kwargs"],
                **asdict(kwargs["prompt"]),
                **asdict(kwargs["sampling"]),
                **asdict(kwargs["loop"]),
            }
        )
        return agent

    @property
    def received(self) -> list[Any]:
        return [t for a in self.agents for t in a.received]


def _main(argv: list[str]) -> int:
    factory = FakeFactory(delay=float(os.environ.get("FAKE_DELAY", "0")), log=os.environ.get("FAKE_LOG"))
    if argv[:1] == ["eval"]:
        from evals.cli import main
    else:
        from evals.generate import main
    return main(argv[1:], agent_factory=factory)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
