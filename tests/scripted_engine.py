"""Test doubles for loop logic: an engine that answers from a script, and an in-process python tool.

The real vLLM engine and the real tool runtime are exercised by the end-to-end tests; these doubles make the
scheduler's decisions (calls, budgets, errors, ordering) easy to pin down.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass

from harmony_agent.encoding import get_encoding
from harmony_agent.engine import Completion, Request, Sampling

STOPS = (200002, 200012)


def toks(text: str) -> list[int]:
    """Harmony text with special tokens written out -> token ids."""
    return get_encoding().encode(text, allowed_special="all")


@dataclass
class _Running:
    request: Request
    tokens: list[int]
    steps_left: int


class ScriptedEngine:
    """Each request's completion is ``responder(prompt_ids, turn)`` (turn = calls so far).

    A completion takes ``len/tokens_per_step`` steps.

    Completions are cut at ``max_tokens`` (finish ``length``) and at the first stop token (finish ``stop``),
    as vLLM does. ``submitted`` keeps every request for inspection.
    """

    def __init__(
        self, responder: Callable[[list[int], int], list[int]], max_model_len: int = 100_000, tokens_per_step: int = 8
    ):
        self.responder = responder
        self.max_model_len = max_model_len
        self.tokens_per_step = tokens_per_step
        self.running: dict[str, _Running] = {}
        self.submitted: list[Request] = []
        self.aborted: list[str] = []
        self.steps = 0

    def submit(self, request: Request, sampling: Sampling) -> None:
        if request.request_id in self.running:
            raise ValueError(f"request id {request.request_id!r} is already running")
        prompt = list(request.prompt_ids)
        turn = prompt.count(200012)  # earlier requests of a trajectory all ended on <|call|>
        self.submitted.append(request)
        tokens = list(self.responder(prompt, turn))
        steps = max(1, -(-len(tokens) // self.tokens_per_step))
        self.running[request.request_id] = _Running(request, tokens, steps)

    def step(self) -> list[Completion]:
        self.steps += 1
        done = []
        for rid, run in list(self.running.items()):
            run.steps_left -= 1
            if run.steps_left > 0:
                continue
            del self.running[rid]
            tokens, finish = run.tokens, "length"
            for i, t in enumerate(tokens):
                if t in STOPS:
                    tokens, finish = tokens[: i + 1], "stop"
                    break
            if len(tokens) > run.request.max_tokens:
                tokens, finish = tokens[: run.request.max_tokens], "length"
            done.append(Completion(rid, tokens, [-0.5] * len(tokens), finish))
        return done

    def has_unfinished(self) -> bool:
        return bool(self.running)

    def abort(self, request_ids: list[str]) -> None:
        for rid in request_ids:
            if self.running.pop(rid, None) is not None:
                self.aborted.append(rid)


@dataclass
class _Out:
    output: str
    status: str
    seconds: float = 0.001
    state_lost: bool = False


class InProcessSession:
    """A stateful python 'session' that execs in a dict: enough to test how the loop uses results."""

    def __init__(self, log: list):
        self.namespace: dict = {}
        self.closed = False
        self.log = log

    def run(self, code: str, timeout: float | None = None) -> _Out:
        self.log.append(code)
        buffer = io.StringIO()
        try:
            with contextlib.redirect_stdout(buffer):
                exec(code, self.namespace)
        except Exception as exc:  # reported to the model like a traceback
            return _Out(buffer.getvalue() + f"{type(exc).__name__}: {exc}\n", "error")
        return _Out(buffer.getvalue(), "ok")

    def close(self) -> None:
        self.closed = True


class InProcessPool:
    def __init__(self):
        self.sessions: list[InProcessSession] = []
        self.log: list[str] = []

    def open(self) -> InProcessSession:
        session = InProcessSession(self.log)
        self.sessions.append(session)
        return session

    def close(self) -> None:
        for s in self.sessions:
            s.close()
