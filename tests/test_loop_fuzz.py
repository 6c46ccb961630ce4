"""Fuzzing the loop (issue 9): seeded random model output, engine faults and session faults, checked against the
invariants that must hold for every trajectory whatever happens: the prompt is exact, the model's tokens are kept
as sampled, masks and logprobs are aligned, inserted replies are tool messages, budgets hold, every trajectory
finishes (no hang) and every session is closed."""

from __future__ import annotations

import random
import threading
import zlib

import pytest

from harmony_agent import Agent, Task
from harmony_agent.encoding import CALL, CHANNEL, CONSTRAIN, END, MESSAGE, RETURN, START, get_encoding, harmony
from harmony_agent.engine import Completion
from harmony_agent.parsing import parse_completion
from harmony_agent.prompt import PromptConfig, render_prompt
from harmony_agent.result import FINISH_REASONS, TOOL_STATUSES

from .scripted_engine import toks

SPECIALS = [START, END, MESSAGE, CHANNEL, CONSTRAIN, RETURN, CALL]
FRAGMENTS = [
    "<|channel|>analysis<|message|>Let me think about it.<|end|><|start|>assistant",
    "<|channel|>analysis to=python code<|message|>print({k})<|call|>",
    "<|channel|>commentary to=functions.lookup <|constrain|>json<|message|>{{}}<|call|>",
    "<|channel|>analysis to=user<|message|>hello<|call|>",
    "<|channel|>garbage garbage to=python<|message|>x = {k}<|call|>",
    "<|channel|>analysis<|message|>x<|end|><|start|>assistant<|call|>",
    "<|channel|>final<|message|>The answer is \\boxed{{{k}}}.<|return|>",
    " to=python<|channel|>analysis code<|message|>print({k} + 1)<|call|>",
    "<|channel|>analysis<|message|>no recipient<|call|>",
    "<|start|>assistant<|channel|>analysis<|message|>restart<|end|>",
]


def _hash(*parts) -> int:
    return zlib.crc32(repr(parts).encode())


class FuzzEngine:
    """Deterministic per prompt: the same prompt always gets the same completion (so tests can map them back)."""

    def __init__(self, case: int, max_model_len: int, faults: bool):
        self.case, self.max_model_len, self.faults = case, max_model_len, faults
        self.running: dict[str, tuple] = {}
        self.completions: dict[tuple, list[int]] = {}
        self.logprobs: dict[tuple, list[float]] = {}

    def completion_for(self, prompt: tuple) -> list[int]:
        rng = random.Random(_hash(self.case, prompt))
        out: list[int] = []
        for _ in range(rng.randint(0, 3)):
            roll = rng.random()
            if roll < 0.75:
                out += toks(rng.choice(FRAGMENTS).format(k=rng.randint(0, 99)))
            elif roll < 0.9:
                out += [rng.choice(SPECIALS) for _ in range(rng.randint(1, 4))]
            else:
                out += [rng.randrange(0, 199_000) for _ in range(rng.randint(1, 30))]
        return out

    def submit(self, request, sampling) -> None:
        if request.request_id in self.running:
            raise ValueError("duplicate request id")
        prompt = tuple(request.prompt_ids)
        if self.faults and _hash(self.case, "submit", prompt) % 23 == 0:
            raise RuntimeError("submit failed")
        tokens = self.completion_for(prompt)
        finish = "length"
        for i, t in enumerate(tokens):
            if t in (CALL, RETURN):
                tokens, finish = tokens[: i + 1], "stop"
                break
        if len(tokens) > request.max_tokens:
            tokens, finish = tokens[: request.max_tokens], "length"
        if finish == "length" and len(tokens) < request.max_tokens:
            tokens, finish = tokens + [RETURN], "stop"  # the model ended with EOS
        logprobs = [-((t % 7) + 1) / 8 for t in tokens]
        self.completions[prompt], self.logprobs[prompt] = tokens, logprobs
        steps = 1 + _hash(self.case, "steps", prompt) % 3
        self.running[request.request_id] = (prompt, tokens, logprobs, finish, steps)

    def step(self) -> list[Completion]:
        done = []
        for rid, (prompt, tokens, logprobs, finish, steps) in list(self.running.items()):
            if steps > 1:
                self.running[rid] = (prompt, tokens, logprobs, finish, steps - 1)
                continue
            del self.running[rid]
            fault = _hash(self.case, "fault", prompt) % 29 if self.faults else -1
            if fault == 0:
                logprobs = logprobs + [-1.0]
            elif fault == 1:
                finish = "abort"
            done.append(Completion(rid, list(tokens), list(logprobs), finish))
        return done

    def has_unfinished(self) -> bool:
        return bool(self.running)

    def abort(self, request_ids) -> None:
        for rid in request_ids:
            self.running.pop(rid, None)


class FuzzSession:
    def __init__(self, pool):
        self.pool, self.closed = pool, False

    def run(self, code, timeout=None):
        self.pool.calls += 1
        kind = _hash(self.pool.case, code, self.pool.calls) % 12
        if kind == 0:
            raise SystemExit(0)
        if kind == 1:
            return None
        if kind == 2:
            raise RuntimeError("session broke")
        if kind == 3:
            return _Out("bad \ud800 surrogate", "ok")
        return _Out(f"out {code[:20]}\n", "ok" if kind % 2 else "error")

    def close(self):
        self.closed = True


class _Out:
    def __init__(self, output, status):
        self.output, self.status, self.seconds, self.state_lost = output, status, 0.001, False


class FuzzPool:
    def __init__(self, case):
        self.case, self.calls, self.sessions, self.lock = case, 0, [], threading.Lock()

    def open(self):
        with self.lock:
            if _hash(self.case, "open", len(self.sessions)) % 13 == 0:
                self.sessions.append(None)
                raise OSError("no session today")
            session = FuzzSession(self)
            self.sessions.append(session)
            return session


def _check_case(case: int) -> int:
    rng = random.Random(case)
    prompt_cfg = PromptConfig(conversation_start_date="2025-01-01", python=rng.random() < 0.85)
    problems = [f"problem {case}-{i}" for i in range(rng.randint(1, 3))]
    prompt_lens = {p: render_prompt(p, prompt_cfg) for p in problems}
    max_model_len = max(len(v) for v in prompt_lens.values()) + rng.randint(20, 600)
    engine = FuzzEngine(case, max_model_len, faults=rng.random() < 0.5)
    pool = FuzzPool(case)
    agent = Agent(
        engine=engine,
        session_pool=pool,
        prompt=prompt_cfg,
        max_tokens=rng.randint(5, 300),
        max_tool_calls=rng.randint(0, 4),
        max_concurrent=rng.randint(1, 4),
    )
    n = rng.randint(1, 3)
    tasks = [Task(p, seed=rng.choice([None, case]), key=(i, j)) for i, p in enumerate(problems) for j in range(n)]
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(done=list(agent.stream(iter(tasks)))), daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), f"case {case} hung"
    done = box["done"]
    assert sorted(t.key for t, _ in done) == sorted(t.key for t in tasks), case
    enc = get_encoding()
    roles = {"user", "system", "developer", "assistant"}
    for task, r in done:
        t = r.trajectory
        where = f"case {case} task {task.key}"
        assert r.finish_reason in FINISH_REASONS, where
        assert (r.error is not None) == (r.finish_reason == "error"), (where, r.finish_reason, r.error)
        assert t.prompt_ids == prompt_lens[task.problem], where
        assert len(t.token_ids) == len(t.loss_mask) == len(t.logprobs), where
        assert len(t) <= max_model_len and r.num_model_tokens <= agent.config.max_tokens, where
        assert t.segments[0].kind == "prompt" and t.segments[0].end == t.prompt_len
        for a, b in zip(t.segments, t.segments[1:]):
            assert a.end == b.start and a.kind != b.kind, where
        assert t.segments[-1].end == len(t)
        for s in t.segments:
            ids = t.token_ids[s.start : s.end]
            if s.kind == "model":
                prompt = tuple(t.token_ids[: s.start])
                assert ids == engine.completions[prompt], where  # kept exactly as sampled
                assert t.logprobs[s.start : s.end] == engine.logprobs[prompt], where
                assert set(t.loss_mask[s.start : s.end]) == {1}, where
            else:
                assert set(t.loss_mask[s.start : s.end]) == {0} and set(t.logprobs[s.start : s.end]) == {0.0}, where
            if s.kind == "tool":
                text = enc.decode(ids)
                author = text[len("<|start|>") :].split(" ", 1)[0]
                assert text.startswith("<|start|>") and author not in roles, (where, text[:80])
                assert " to=assistant<|channel|>" in text and text.endswith("<|end|><|start|>assistant"), where
                channel = text.split("<|channel|>", 1)[1].split("<|message|>", 1)[0]
                assert channel in ("analysis", "commentary", "final"), (where, channel)
                assert len(ids) < 400, where
        assert all(c.status in TOOL_STATUSES for c in r.tool_calls), where
        assert len(r.tool_calls) <= agent.config.max_tool_calls, where
    assert all(s is None or s.closed for s in pool.sessions), case
    return len(done)


def test_fuzz_invariants_hold_for_300_seeded_cases():
    trajectories = sum(_check_case(case) for case in range(300))
    assert trajectories > 600


@pytest.mark.parametrize("case", range(200))
def test_parser_matches_openai_harmony_on_well_formed_output(case):
    """On well-formed completions the loop's parser gives the messages openai_harmony's parser gives."""
    oh = harmony()
    rng = random.Random(case)
    middles = ["<|channel|>analysis<|message|>Let me think {k}.<|end|>", "<|channel|>commentary<|message|>n {k}<|end|>"]
    lasts = [FRAGMENTS[1], FRAGMENTS[2], FRAGMENTS[6], FRAGMENTS[7], "<|channel|>final<|message|>cut at {k}"]
    text = "".join(rng.choice(middles) + "<|start|>assistant" for _ in range(rng.randint(0, 3)))
    text = (text + rng.choice(lasts)).format(k=rng.randint(0, 999))
    ids = toks(text)
    reference = oh.StreamableParser(get_encoding(), oh.Role.ASSISTANT, strict=False)
    for token in ids:
        reference.process(token)
    reference.process_eos()
    ours = parse_completion(ids)
    assert ours.error is None, (text, ours.error)
    assert [m.to_dict() for m in ours.messages] == [m.to_dict() for m in reference.messages], text
