"""A fake `harmony_agent.Agent` for the evals tests (duck-typed: ``.stream(tasks)`` -> ``(task, result)``).

It answers AIME problems from the shared data: mostly right, sometimes wrong, sometimes without a box,
deterministically per (problem, seed), yielding in a shuffled (not submission) order. Run as a module it is
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
from typing import Any, Optional

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


@dataclass
class FakeTrajectory:
    prompt_ids: list[int]
    response_ids: list[int]

    def to_rl(self) -> dict[str, Any]:
        return {"prompt_ids": self.prompt_ids, "response_ids": self.response_ids,
                "response_mask": [1] * len(self.response_ids), "response_logprobs": [-0.5] * len(self.response_ids)}


@dataclass
class FakeResult:
    problem: str
    seed: int
    final_text: str
    answer: Optional[str]
    messages: list[Any]
    tool_calls: list[Any]
    trajectory: Any
    finish_reason: str
    num_model_tokens: int
    num_tool_tokens: int
    started_at: float
    finished_at: float
    error: Optional[str] = None


@dataclass
class FakeAgent:
    """Answers from the AIME data; `kwargs` keeps what the factory was called with."""

    delay: float = 0.0
    kwargs: dict[str, Any] = field(default_factory=dict)
    received: list[Any] = field(default_factory=list)
    closed: bool = False
    log: Optional[str] = None

    def __post_init__(self) -> None:
        self.answers = _answers()

    def result_for(self, task: Any) -> FakeResult:
        problem = task.problem.split("\nPlease reason step by step")[0]
        truth = self.answers.get(problem)
        m = re.search(r"ANSWER=(\S+)", task.problem)  # generate tests put the answer in the prompt
        truth = truth if truth is not None else (m.group(1) if m else "0")
        kind = outcome(problem, task.seed)
        said = {"right": truth, "wrong": str(int(truth) + 1) if truth.isdigit() else truth + "1", "none": None}[kind]
        final = f"The answer is $\\boxed{{{said}}}$." if said is not None else "I could not finish."
        messages = [
            {"role": "user", "content": [{"type": "text", "text": task.problem}]},
            {"role": "assistant", "channel": "analysis", "recipient": "python",
             "content": [{"type": "text", "text": "Try \\boxed{999} first. print(1)" if said else "print(1)"}]},
            {"role": "tool", "name": "python", "recipient": "assistant", "channel": "analysis",
             "content": [{"type": "text", "text": "1"}]},
            {"role": "assistant", "channel": "final", "content": [{"type": "text", "text": final}]},
        ]
        now = time.time()
        tokens = 100 + (zlib.crc32(problem.encode()) + task.seed) % 50
        return FakeResult(
            problem=task.problem, seed=task.seed, final_text=final, answer=said, messages=messages,
            tool_calls=[{"status": "ok", "seconds": 0.25}, {"status": "timeout", "seconds": 10.0}],
            trajectory=FakeTrajectory([1, 2, 3], list(range(tokens))),
            finish_reason="final" if said is not None else "length",
            num_model_tokens=tokens, num_tool_tokens=7, started_at=now - 1.0, finished_at=now,
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

    def __call__(self, **kwargs: Any) -> FakeAgent:
        self.calls.append(kwargs)
        agent = FakeAgent(kwargs=kwargs, **self.options)
        self.agents.append(agent)
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
