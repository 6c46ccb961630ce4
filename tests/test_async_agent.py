"""AsyncAgent on vLLM's real AsyncLLM (CPU build, tiny scripted model, real sessions): concurrency, exact tokens,
cancellation, weight updates with the prefix-cache reset.

The AsyncLLM lives on one event loop for the whole module (its output handler is bound to the loop that first
used it), run in a background thread; each test submits coroutines to it.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from harmony_agent import Task
from harmony_agent.async_agent import AsyncAgent, AsyncVLLMEngine
from harmony_agent.errors import EngineError
from harmony_agent.testing import SCRIPTED_PROBLEMS, transcript_segments

from .rl_helpers import max_sampled_diff, transformers_logprobs

TWO_CALLS = next(p for p in SCRIPTED_PROBLEMS if len(p.calls) == 2)


# AsyncLLM engines of this module's own: started and stopped here, so run after the shared engines' tests
pytestmark = pytest.mark.own_engine


@pytest.fixture(scope="module")
def run_async():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True, name="test-event-loop")
    thread.start()

    def run(coro, timeout: float = 900):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    run.loop = loop  # type: ignore[attr-defined]
    run.thread = thread  # type: ignore[attr-defined]
    yield run

    async def cancel_the_rest():  # e.g. vLLM's output task after the engine's shutdown: no "destroyed" warnings
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in others:
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    run(cancel_the_rest(), 30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@pytest.fixture(scope="module")
def async_engine(tiny_model_path, run_async):
    # lets the agent send its weight-loading function to the engine core process (see harmony_agent/weights.py)
    os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"

    async def start():
        return AsyncVLLMEngine.from_model(
            str(tiny_model_path),
            enforce_eager=True,
            max_model_len=4096,
            kv_cache_memory_bytes=256 << 20,
            seed=0,
            dtype="float32",
        )

    engine = run_async(start())
    yield engine
    engine.shutdown()


@pytest.fixture(scope="module")
def pool():
    from tool_runtime import SessionPool

    with SessionPool(max_sessions=96, timeout=10.0) as p:
        yield p


class ThreadRecordingPool:
    """Wraps a pool: records the thread of every session.run and can hold the n-th call of each session."""

    def __init__(self, pool, hold_call: int | None = None, hold_seconds: float = 0.0):
        self.pool, self.hold_call, self.hold_seconds = pool, hold_call, hold_seconds
        self.threads: list[str] = []
        self.held = 0
        self.lock = threading.Lock()

    def open(self):
        session, calls = self.pool.open(), [0]
        real_run = session.run

        def run(code, timeout=None):
            with self.lock:
                self.threads.append(threading.current_thread().name)
                calls[0] += 1
                hold = calls[0] == self.hold_call
                self.held += hold
            if hold:
                time.sleep(self.hold_seconds)
            return real_run(code, timeout=timeout)

        session.run = run
        return session

    @property
    def closed(self):
        return self.pool.closed


def _check_exact(result, entry, prompt):
    expected = transcript_segments(entry, prompt)
    assert result.finish_reason == "final", result.response_text
    assert result.answer == entry.answer
    assert [s.kind for s in result.trajectory.segments] == [kind for kind, _ in expected]
    assert result.trajectory.token_ids == [t for _, ids in expected for t in ids]
    assert [(c.code, c.output, c.status) for c in result.tool_calls] == [(code, out, "ok") for code, out in entry.calls]
    t = result.trajectory
    assert len(t.logprobs) == len(t.token_ids) and all(lp < 0 for lp, m in zip(t.logprobs, t.loss_mask) if m)


def test_64_concurrent_coroutines_give_token_exact_transcripts_and_tools_never_run_on_the_event_loop(
    async_engine, run_async, pool
):
    recording = ThreadRecordingPool(pool)
    agent = AsyncAgent(async_engine, session_pool=recording, temperature=0.0, max_tokens=400)
    entries = [SCRIPTED_PROBLEMS[i % len(SCRIPTED_PROBLEMS)] for i in range(64)]

    async def main():
        return await asyncio.gather(*(agent.solve(e.problem, seed=i) for i, e in enumerate(entries)))

    results = run_async(main())
    for entry, result in zip(entries, results):
        _check_exact(result, entry, agent.prompt)
    assert [r.seed for r in results] == list(range(64))
    assert len(recording.threads) == sum(len(e.calls) for e in entries)
    assert run_async.thread.name not in recording.threads
    assert all(name.startswith("harmony-async-tool") for name in recording.threads)
    assert pool.info["live_sessions"] == 0
    assert async_engine.engine.get_num_unfinished_requests() == 0
    agent.close()


def test_stream_over_an_async_iterable_and_run(async_engine, run_async, pool):
    agent = AsyncAgent(async_engine, session_pool=pool, temperature=0.0, max_tokens=400, max_concurrent=8)

    async def tasks():
        for i in range(24):
            await asyncio.sleep(0)
            yield Task(SCRIPTED_PROBLEMS[i % 3].problem, seed=i, key=i)

    async def main():
        streamed = [(t.key, r) async for t, r in agent.stream(tasks())]
        grid = await agent.run([e.problem for e in SCRIPTED_PROBLEMS], n=2, seed=10)
        return streamed, grid

    streamed, grid = run_async(main())
    assert sorted(k for k, _ in streamed) == list(range(24))
    for key, result in streamed:
        _check_exact(result, SCRIPTED_PROBLEMS[key % 3], agent.prompt)
    for entry, row in zip(SCRIPTED_PROBLEMS, grid):
        assert [r.seed for r in row] == [10, 11]
        for r in row:
            _check_exact(r, entry, agent.prompt)
    assert pool.info["live_sessions"] == 0


def test_cancelling_coroutines_closes_their_sessions_and_aborts_their_requests(async_engine, run_async, pool):
    # every session's second call is held for 60 s: the coroutines are cancelled while their cells run
    holding = ThreadRecordingPool(pool, hold_call=2, hold_seconds=60)
    agent = AsyncAgent(async_engine, session_pool=holding, temperature=0.0, max_tokens=400)

    async def during_tools():
        tasks = [asyncio.ensure_future(agent.solve(TWO_CALLS.problem, seed=i)) for i in range(8)]
        while holding.held < 8:
            await asyncio.sleep(0.05)
        live_before = pool.info["live_sessions"]
        for t in tasks:
            t.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        return live_before, outcomes

    live_before, outcomes = run_async(during_tools())
    assert live_before == 8
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)
    assert pool.info["live_sessions"] == 0  # closed by the cancelled coroutines themselves, not later

    # cancelled while generating: an unscripted prompt at temperature 1 decodes for a long time
    free = AsyncAgent(async_engine, session_pool=pool, temperature=1.0, max_tokens=3000)

    async def during_generation():
        tasks = [asyncio.ensure_future(free.solve("Tell me about Paris.", seed=i)) for i in range(8)]
        while async_engine.engine.get_num_unfinished_requests() < 8:
            await asyncio.sleep(0.01)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.2)
        return async_engine.engine.get_num_unfinished_requests()

    assert run_async(during_generation()) == 0
    assert pool.info["live_sessions"] == 0
    agent.close()
    free.close()


def test_weight_update_resets_the_prefix_cache_and_the_next_run_follows_the_new_weights(
    async_engine, run_async, pool, tiny_model_path
):
    from safetensors.torch import load_file

    from harmony_agent.weights import aload_weights

    original = load_file(str(tiny_model_path / "model.safetensors"))
    changed = {k: v * 0.5 if "embed_tokens" in k else v for k, v in original.items()}
    entry = SCRIPTED_PROBLEMS[0]
    agent = AsyncAgent(async_engine, session_pool=pool, temperature=0.0, max_tokens=400)
    try:
        before = run_async(agent.solve(entry.problem, seed=0))  # its prompt is now in the prefix cache
        start = before.trajectory.prompt_len
        assert (
            max_sampled_diff(
                before, transformers_logprobs(tiny_model_path, original, before.trajectory.token_ids, start), start
            )
            < 1e-3
        )

        # the hazard, shown: new weights without the reset reuse KV the old weights computed
        run_async(aload_weights(async_engine.engine, changed))
        stale = run_async(agent.solve(entry.problem, seed=0))
        reference = transformers_logprobs(tiny_model_path, changed, stale.trajectory.token_ids, start)
        assert max_sampled_diff(stale, reference, start) > 1e-3

        # the path: update_weights loads and resets; every logprob then comes from the new weights
        run_async(aload_weights(async_engine.engine, original))
        run_async(agent.solve(entry.problem, seed=0))  # the old weights' KV is cached again
        run_async(agent.update_weights(changed))
        after = run_async(agent.solve(entry.problem, seed=0))
        reference = transformers_logprobs(tiny_model_path, changed, after.trajectory.token_ids, start)
        assert max_sampled_diff(after, reference, start) < 1e-3
        assert after.trajectory.logprobs != before.trajectory.logprobs
    finally:
        run_async(agent.update_weights(original))
    _check_exact(run_async(agent.solve(entry.problem, seed=0)), entry, agent.prompt)
    agent.close()


def test_logprobs_mode_is_checked_against_the_engine(async_engine):
    with pytest.raises(EngineError, match="logprobs_mode='processed_logprobs'"):
        AsyncAgent(async_engine, logprobs_mode="processed_logprobs")
    with pytest.raises(ValueError, match="logprobs_mode='raw_logits' is not one of"):
        AsyncAgent(async_engine, logprobs_mode="raw_logits")


def test_the_callers_own_requests_on_the_shared_async_engine_run_beside_the_agent(async_engine, run_async, pool):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from harmony_agent.testing import expected_transcript, prompt_ids

    agent = AsyncAgent(async_engine, session_pool=pool, temperature=0.0, max_tokens=400)
    entry = SCRIPTED_PROBLEMS[1]
    ids = prompt_ids(entry.problem, agent.prompt)

    async def mine():
        last = None
        async for out in async_engine.engine.generate(
            TokensPrompt(prompt_token_ids=ids), SamplingParams(temperature=0.0, max_tokens=8), "caller-1"
        ):
            last = out
        return list(last.outputs[0].token_ids)

    async def main():
        return await asyncio.gather(mine(), *(agent.solve(e.problem, seed=i) for i, e in enumerate(SCRIPTED_PROBLEMS)))

    own, *results = run_async(main())
    assert own == expected_transcript(entry)[0][0][:8]
    for entry_, result in zip(SCRIPTED_PROBLEMS, results):
        _check_exact(result, entry_, agent.prompt)
    agent.close()
