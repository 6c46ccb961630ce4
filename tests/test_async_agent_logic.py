"""AsyncAgent's driving logic on a scripted async engine (no vLLM): hundreds of coroutines in flight at once, the
concurrency bound of stream(), engine failures, one implementation of the per-trajectory logic."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from harmony_agent import EngineFailure, Task
from harmony_agent.async_agent import AsyncAgent
from harmony_agent.encoding import CALL
from harmony_agent.engine import Completion

from .scripted_engine import InProcessPool
from .test_loop import CALL_2, FINAL_2, by_turn, make_agent


class AsyncScriptedEngine:
    """``generate`` answers from a responder after waiting for ``gate`` (set by the test, or at once)."""

    max_model_len = 100_000

    def __init__(self, responder, fail_on: int | None = None):
        self.responder = responder
        self.in_flight = 0
        self.peak = 0
        self.gate = asyncio.Event()
        self.fail_on = fail_on
        self._ids = itertools.count()
        self.calls = 0

    def new_request_id(self) -> str:
        return f"s-{next(self._ids)}"

    async def generate(self, request, sampling) -> Completion:
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("engine died")
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await self.gate.wait()
            prompt = list(request.prompt_ids)
            tokens = self.responder(prompt, prompt.count(CALL))
            return Completion(request.request_id, tokens, [-0.5] * len(tokens), "stop")
        finally:
            self.in_flight -= 1


def test_300_coroutines_in_flight_at_once_give_the_synchronous_agents_trajectories():
    engine = AsyncScriptedEngine(by_turn(CALL_2, FINAL_2))
    agent = AsyncAgent(engine, session_pool=InProcessPool(), conversation_start_date="2025-01-01")

    async def main():
        tasks = [asyncio.ensure_future(agent.solve("q", seed=i)) for i in range(300)]
        while engine.in_flight < 300:
            await asyncio.sleep(0.01)
        engine.gate.set()
        return await asyncio.wait_for(asyncio.gather(*tasks), 60)

    results = asyncio.run(main())
    agent.close()
    assert engine.peak == 300
    sync_agent, _, _ = make_agent(by_turn(CALL_2, FINAL_2))
    [[expected]] = sync_agent.run(["q"], seed=0)
    for r in results:
        assert r.answer == "2" and r.finish_reason == "final"
        assert r.trajectory.token_ids == expected.trajectory.token_ids
        assert r.trajectory.loss_mask == expected.trajectory.loss_mask
        assert [c.output for c in r.tool_calls] == ["2\n"]


def test_stream_keeps_at_most_max_concurrent_in_flight_and_reads_tasks_lazily():
    engine = AsyncScriptedEngine(by_turn(FINAL_2))
    engine.gate.set()
    agent = AsyncAgent(engine, session_pool=InProcessPool(), max_concurrent=50, conversation_start_date="2025-01-01")
    taken = []

    def tasks():
        for i in range(400):
            taken.append(i)
            yield Task("q", seed=i, key=i)

    async def main():
        keys = []
        async for task, result in agent.stream(tasks()):
            assert result.answer == "2"
            keys.append(task.key)
            assert len(taken) - len(keys) <= 50
        return keys

    keys = asyncio.run(main())
    assert sorted(keys) == list(range(400)) and engine.peak <= 50


def test_an_engine_failure_raises_engine_failure_with_the_unfinished_tasks():
    engine = AsyncScriptedEngine(by_turn(FINAL_2), fail_on=5)
    engine.gate.set()
    agent = AsyncAgent(
        engine, session_pool=InProcessPool(), python=False, max_concurrent=8, conversation_start_date="2025-01-01"
    )

    async def main():
        return [t.key async for t, _ in agent.stream(Task("q", seed=i, key=i) for i in range(20))]

    with pytest.raises(EngineFailure, match="engine died") as info:
        asyncio.run(main())
    assert info.value.unfinished and all(isinstance(t, Task) for t in info.value.unfinished)
    assert 4 in [t.key for t in info.value.unfinished]  # the 5th request's task


def test_bad_arguments_fail_at_construction():
    with pytest.raises(ValueError, match="exactly one of engine="):
        AsyncAgent()
    with pytest.raises(TypeError, match="unknown Agent argument"):
        AsyncAgent(AsyncScriptedEngine(by_turn(FINAL_2)), temprature=0.5)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        AsyncAgent(AsyncScriptedEngine(by_turn(FINAL_2)), temperature=-1)
