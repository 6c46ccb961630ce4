"""``AsyncAgent``: the agent loop as asyncio coroutines over vLLM's ``AsyncLLM`` (v1), for RL rollout workers
(verl's agent loop, SkyRL, slime) that already run an event loop.

Each trajectory is one coroutine stepping the same :class:`~harmony_agent.rollout.Rollout` the synchronous
:class:`~harmony_agent.scheduler.Scheduler` steps (one copy of the per-trajectory logic): ``next_request`` ->
``await engine.generate`` -> ``on_completion`` -> the python call on a worker thread (never on the event loop)
-> ``on_tool_outcome`` -> ... -> ``result``. Hundreds of coroutines share one engine; vLLM batches their
requests. Cancelling a coroutine aborts its request in the engine (``AsyncLLM.generate`` does it) and closes its
python session.

>>> llm = AsyncLLM.from_engine_args(AsyncEngineArgs(model=..., skip_tokenizer_init=True))  # doctest: +SKIP
>>> agent = AsyncAgent(llm)                                                                 # doctest: +SKIP
>>> result = await agent.solve("What is 2**100 mod 7?", seed=0)                             # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import itertools
import logging
import threading
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import replace
from typing import Any

from .agent import Agent, Task, _PromptCache, apply_shortcuts, fresh_seed
from .config import LoopConfig, PromptConfig, Sampling
from .encoding import get_encoding
from .engine import Completion, Request, check_logprobs_mode, completion_from_output, sampling_params
from .errors import EngineError, EngineFailure
from .result import Result
from .rollout import Phase, Rollout, ToolOutcome, close_quietly, failed_call, run_tool_call

logger = logging.getLogger(__name__)


class AsyncVLLMEngine:
    """``await engine.generate(request, sampling) -> Completion`` over a ``vllm.v1.engine.async_llm.AsyncLLM``."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.max_model_len = int(engine.model_config.max_model_len)
        self._prefix = f"haa{id(self):x}-"
        self._ids = itertools.count()
        self._render = getattr(getattr(engine, "renderer", None), "render_cmpl", None)

    @classmethod
    def from_model(cls, model: str, **engine_kwargs: Any) -> AsyncVLLMEngine:
        """Build an ``AsyncLLM`` for token-in/token-out use (no tokenizer, prefix caching on; an explicit KV size on
        vLLM's CPU build). Its engine core runs in a child process: scripts need an ``if __name__ == "__main__"``
        guard."""
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from .engine import _cpu_platform

        kwargs = {"skip_tokenizer_init": True, "enable_prefix_caching": True, **engine_kwargs}
        if _cpu_platform():
            kwargs.setdefault("kv_cache_memory_bytes", 1 << 30)
        try:
            return cls(AsyncLLM.from_engine_args(AsyncEngineArgs(model=model, **kwargs)))
        except Exception as exc:
            raise EngineError(
                f"cannot start vLLM's AsyncLLM for {model!r} ({type(exc).__name__}: {exc}); check the "
                "model path and the engine arguments"
            ) from exc

    def new_request_id(self) -> str:
        return f"{self._prefix}{next(self._ids)}"

    def check_sampling(self, sampling: Sampling) -> None:
        check_logprobs_mode(self.engine.model_config, sampling)

    async def generate(self, request: Request, sampling: Sampling) -> Completion:
        """Run one request to its end. Cancelling the awaiting coroutine aborts the request in the engine."""
        from vllm.inputs import TokensPrompt

        prompt: Any = TokensPrompt(prompt_token_ids=list(request.prompt_ids))
        if self._render is not None:
            (prompt,) = self._render([prompt])
        last = None
        async for out in self.engine.generate(prompt, sampling_params(request, sampling), request.request_id):
            last = out
        if last is None or not last.finished:
            return Completion(request.request_id, [], None, "abort")
        return completion_from_output(last)

    async def update_weights(self, named_tensors: Iterable[tuple[str, Any]] | dict) -> None:
        """Load new weights (checkpoint names and shapes) into the engine, then reset its prefix cache."""
        from .weights import aload_weights

        await aload_weights(self.engine, named_tensors)
        await self.weights_updated()

    async def weights_updated(self) -> None:
        """Drop the KV blocks the old weights computed (see ``VLLMEngine.weights_updated``)."""
        if not await self.engine.reset_prefix_cache():
            raise EngineError(
                "vLLM could not reset its prefix cache (requests are still running): update weights "
                "when no request is in the engine"
            )

    def shutdown(self) -> None:
        self.engine.shutdown()


class AsyncAgent:
    """gpt-oss with python as a builtin, stateful tool, as asyncio coroutines over vLLM's ``AsyncLLM``.

    Give it an ``AsyncLLM`` (``engine=``, yours: it stays running after :meth:`close`), an
    :class:`AsyncVLLMEngine`, or a model to load (``model=`` plus ``engine_kwargs`` for ``AsyncEngineArgs``). Settings
    are :class:`~harmony_agent.Agent`'s: ``prompt=``, ``sampling=``, ``loop=`` or flat shortcuts.
    ``loop.max_concurrent`` bounds :meth:`stream`'s trajectories in flight and the session pool it starts.
    """

    # the session pool is started, opened and closed exactly as the synchronous Agent does it (one definition;
    # those methods use only the attributes set in __init__ below)
    _ensure_pool = Agent._ensure_pool
    _open_session = Agent._open_session
    close_pool = Agent.close

    def __init__(
        self,
        engine: Any = None,
        *,
        model: str | None = None,
        engine_kwargs: dict[str, Any] | None = None,
        prompt: PromptConfig | None = None,
        sampling: Sampling | None = None,
        loop: LoopConfig | None = None,
        session_pool: Any = None,
        **shortcuts: Any,
    ):
        if (engine is None) == (model is None):
            raise ValueError("pass exactly one of engine= (an AsyncLLM or AsyncVLLMEngine) or model= (a name or path)")
        prompt, sampling, loop = apply_shortcuts(
            prompt or PromptConfig(), sampling or Sampling(), loop or LoopConfig(), shortcuts
        )
        if prompt.conversation_start_date is None:
            import datetime as _dt

            prompt = replace(prompt, conversation_start_date=_dt.date.today().isoformat())
        self.prompt, self.sampling, self.config = prompt, sampling, loop
        get_encoding()  # fail now, with the fix in the message, if the vocabulary is missing
        self._own_engine = engine is None
        if engine is None:
            engine = AsyncVLLMEngine.from_model(
                model,  # type: ignore[arg-type]
                **{"logprobs_mode": sampling.logprobs_mode, **(engine_kwargs or {})},
            )
        elif not hasattr(engine, "generate") or not hasattr(engine, "new_request_id"):
            engine = AsyncVLLMEngine(engine)
        check = getattr(engine, "check_sampling", None)
        if check is not None:
            check(sampling)
        self.engine = engine
        self.max_model_len = int(engine.max_model_len)
        self._pool = session_pool
        self._own_pool = session_pool is None
        self._pool_lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._prompts = _PromptCache(prompt)

    # -- one trajectory ------------------------------------------------------------------------------------

    async def solve(self, problem: Any, seed: int | None = None) -> Result:
        """One trajectory for ``problem`` (a string or a conversation). Without ``seed`` a fresh one is drawn and
        recorded in ``Result.seed``. Raises :class:`~harmony_agent.EngineFailure` when the engine fails."""
        task = problem if isinstance(problem, Task) else Task(problem, fresh_seed() if seed is None else seed)
        return await self.run_task(task)

    async def run_task(self, task: Task) -> Result:
        """Run one :class:`Task` to its end (its seed as given: ``None`` is unseeded sampling)."""
        if self.prompt.python:  # starting the pool (once) spawns its template process: not on the event loop
            await asyncio.get_running_loop().run_in_executor(None, self._ensure_pool)  # type: ignore[misc]
        rollout = Rollout(
            task,
            self._prompts.render(task.problem),
            loop=self.config,
            python=self.prompt.python,
            max_model_len=self.max_model_len,
            seed=task.seed,
            problem=task.problem,
        )
        try:
            while rollout.phase is not Phase.FINISHED:
                if rollout.phase is Phase.READY:
                    await self._generate(rollout)
                elif rollout.phase is Phase.TOOL:
                    outcome = await self._run_call(rollout)
                    if outcome.fatal is not None:
                        raise outcome.fatal
                    self._guarded(
                        rollout, functools.partial(rollout.on_tool_outcome, outcome), "handling the tool output"
                    )
                else:  # GENERATING is only ever seen inside _generate
                    rollout.fail(f"unexpected phase {rollout.phase.value}")
        finally:  # finished, failed, or cancelled: the session goes now (a running cell is stopped)
            close_quietly(rollout.take_session(final=True))
        assert rollout.result is not None
        return rollout.result

    async def _generate(self, r: Rollout) -> None:
        request = None

        def next_request() -> None:
            nonlocal request
            request = r.next_request(self.engine.new_request_id())

        self._guarded(r, next_request, "building the request")
        if request is None:
            return
        try:
            completion = await self.engine.generate(request, self.sampling)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise EngineFailure(
                f"the engine failed during the run ({type(exc).__name__}: {exc}); the task is in "
                "this error's .unfinished",
                [r.task],
            ) from exc
        self._guarded(r, lambda: r.on_completion(completion), "handling the completion")

    async def _run_call(self, r: Rollout) -> ToolOutcome:
        """The call on a worker thread (never on the event loop), given up on after ``tool_deadline`` seconds."""
        call = r.call
        assert call is not None
        future = asyncio.get_running_loop().run_in_executor(
            self._tool_executor(),
            run_tool_call,
            r,
            call,
            self._open_session,  # type: ignore[misc]
            self.config.tool_timeout,
        )
        try:
            return await asyncio.wait_for(future, self.config.tool_deadline)
        except asyncio.TimeoutError:
            session = r.take_session(final=False)  # closed off the event loop; the next call opens a fresh one
            if session is not None:
                threading.Thread(target=close_quietly, args=(session,), daemon=True).start()
            seconds = self.config.tool_deadline
            return failed_call(call.text, f"no answer within {seconds:g} s", seconds, state_lost=session is not None)

    @staticmethod
    def _guarded(r: Rollout, step: Any, what: str) -> None:
        """One step of one rollout; an exception ends that trajectory alone (``finish_reason="error"``)."""
        r.attempt(step, what)

    def _tool_executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._pool_lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self.config.max_concurrent, thread_name_prefix="harmony-async-tool"
                )
            return self._executor

    # -- many trajectories ---------------------------------------------------------------------------------

    async def stream(self, tasks: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[tuple[Task, Result]]:
        """Run every task (a :class:`Task`, a problem string or a conversation), at most ``max_concurrent`` at once;
        yield ``(task, result)`` as each finishes. ``tasks`` may be an async iterable, read as room frees up.
        Leaving the loop early cancels the rest (their requests are aborted, their sessions closed). An engine
        failure raises :class:`~harmony_agent.EngineFailure` with every unfinished task."""
        source = _aiter(tasks)
        running: dict[asyncio.Task, Task] = {}
        exhausted = False
        try:
            while True:
                while not exhausted and len(running) < self.config.max_concurrent:
                    try:
                        item = await source.__anext__()
                    except StopAsyncIteration:
                        exhausted = True
                        break
                    task = item if isinstance(item, Task) else Task(item)
                    running[asyncio.ensure_future(self.run_task(task))] = task
                if not running:
                    return
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    task = running.pop(future)
                    exc = future.exception()
                    if isinstance(exc, EngineFailure):
                        unfinished = [task, *running.values()]
                        raise EngineFailure(
                            f"{exc}; {len(unfinished)} unfinished task(s) in .unfinished", unfinished
                        ) from exc.__cause__
                    if exc is not None:
                        raise exc
                    yield task, future.result()
        finally:
            for future in running:
                future.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    async def run(self, problems: Iterable[Any] | str, n: int = 1, seed: int | None = None) -> list[list[Result]]:
        """Every problem times ``n`` samples: ``results[i][j]`` is problem i, sample j (seed ``seed + j``), as
        :meth:`Agent.run <harmony_agent.Agent.run>`."""
        if isinstance(problems, str):
            problems = [problems]
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        problems = list(problems)
        base = fresh_seed() if seed is None else seed
        results: list[list[Any]] = [[None] * n for _ in problems]
        tasks = [Task(p, base + j, (i, j)) for i, p in enumerate(problems) for j in range(n)]
        async for task, result in self.stream(tasks):
            key: Any = task.key
            results[key[0]][key[1]] = result
        return results

    # -- weights (RL) ---------------------------------------------------------------------------------------

    async def update_weights(self, named_tensors: Iterable[tuple[str, Any]] | dict) -> None:
        """Load a trainer's new weights into the engine and reset its prefix cache (between runs; docs/rl.md)."""
        await self.engine.update_weights(named_tensors)

    async def weights_updated(self) -> None:
        """Call after changing the engine's weights yourself: drops the KV computed by the old weights."""
        await self.engine.weights_updated()

    # -- end -----------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the session pool and the tool threads this agent started, and the engine if it built it."""
        self.close_pool()  # type: ignore[misc]
        with self._pool_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        if self._own_engine:
            self.engine.shutdown()

    async def __aenter__(self) -> AsyncAgent:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()


async def _aiter(items: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if hasattr(items, "__aiter__"):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
