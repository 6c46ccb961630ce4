"""``Agent`` and ``solve``: the public entry points of the loop."""
from __future__ import annotations

import datetime as _dt
import threading
from dataclasses import dataclass, fields, replace
from typing import Any, Hashable, Iterable, Iterator, Sequence

from .encoding import get_encoding
from .config import LoopConfig, PromptConfig, Sampling
from .engine import Engine, VLLMEngine
from .prompt import render_prompt
from .result import Result
from .scheduler import Scheduler


@dataclass(frozen=True)
class Task:
    """One trajectory to run: the user's problem text, its sampling seed and a key of the caller's."""

    problem: str
    seed: int | None = None
    key: Hashable = None


def apply_shortcuts(prompt: PromptConfig, sampling: Sampling, loop: LoopConfig,
                    shortcuts: dict[str, Any]) -> tuple[PromptConfig, Sampling, LoopConfig]:
    """Apply flat keyword shortcuts (``temperature=0.6``, ``max_tool_calls=5``) to the configuration object
    that owns each name; an unknown name is a TypeError that lists the valid ones.

    >>> p, s, l = apply_shortcuts(PromptConfig(), Sampling(), LoopConfig(), {"temperature": 0.5, "python": False})
    >>> s.temperature, p.python, l.max_tool_calls
    (0.5, False, 100)
    """
    objects = [prompt, sampling, loop]
    owners = {f.name: i for i, obj in enumerate(objects) for f in fields(obj)}
    unknown = sorted(set(shortcuts) - set(owners))
    if unknown:
        raise TypeError(f"unknown Agent argument(s) {', '.join(unknown)}; valid: {', '.join(sorted(owners))}")
    for i, obj in enumerate(objects):
        mine = {k: v for k, v in shortcuts.items() if owners[k] == i}
        if mine:
            objects[i] = replace(obj, **mine)
    return objects[0], objects[1], objects[2]  # type: ignore[return-value]


class Agent:
    """gpt-oss with python as a builtin, stateful tool, over one engine.

    Give it your own ``vllm.LLM`` (``llm=``), a model to load (``model=`` plus ``engine_kwargs`` for
    ``vllm.LLM``), or any :class:`~harmony_agent.engine.Engine` (``engine=``). Settings come as
    ``prompt=PromptConfig(...)``, ``sampling=Sampling(...)`` and ``loop=LoopConfig(...)``; any of their fields may
    also be passed flat (``temperature=0.6``), overriding the object's value.

    >>> agent = Agent(model="openai/gpt-oss-20b", reasoning_effort="high")          # doctest: +SKIP
    >>> results = agent.run(["What is 2**100 mod 7?"], n=4, seed=0)                  # doctest: +SKIP
    >>> results[0][0].answer                                                          # doctest: +SKIP
    '2'
    """

    def __init__(self, llm: Any = None, *, model: str | None = None, engine: Engine | None = None,
                 engine_kwargs: dict[str, Any] | None = None, prompt: PromptConfig | None = None,
                 sampling: Sampling | None = None, loop: LoopConfig | None = None, session_pool: Any = None,
                 **shortcuts: Any):
        if sum(x is not None for x in (llm, model, engine)) != 1:
            raise ValueError("pass exactly one of llm= (a vllm.LLM), model= (a name or path) or engine=")
        prompt, sampling, loop = apply_shortcuts(prompt or PromptConfig(), sampling or Sampling(),
                                                 loop or LoopConfig(), shortcuts)
        # the date is fixed once per agent, so a run that crosses midnight renders every prompt alike
        if prompt.conversation_start_date is None:
            prompt = replace(prompt, conversation_start_date=_dt.date.today().isoformat())
        self.prompt = prompt
        self.sampling = sampling
        self.config = loop
        get_encoding()  # fail now, with the fix in the message, if the vocabulary is missing
        if engine is None:
            engine = VLLMEngine(llm) if llm is not None else VLLMEngine.from_model(model, **(engine_kwargs or {}))
        self.engine = engine
        self._pool = session_pool
        self._own_pool = session_pool is None
        self._pool_lock = threading.Lock()

    # -- sessions ------------------------------------------------------------------------------------------

    def _open_session(self):
        with self._pool_lock:
            if self._pool is None:
                from tool_runtime import SessionPool

                self._pool = SessionPool(max_sessions=self.config.max_concurrent, timeout=self.config.tool_timeout,
                                         max_output_chars=self.config.max_output_chars)
        return self._pool.open()

    # -- running -------------------------------------------------------------------------------------------

    def stream(self, tasks: Iterable[Task | str]) -> Iterator[tuple[Task, Result]]:
        """Run every task in one continuous run; yield ``(task, result)`` as each trajectory finishes.

        Stopping the iteration early aborts the requests still running and closes their sessions.
        """
        tasks = (t if isinstance(t, Task) else Task(problem=t) for t in tasks)
        new_id = getattr(self.engine, "new_request_id", None) or _counter()
        scheduler = Scheduler(self.engine, self.sampling, self.config,
                              render=lambda task: render_prompt(task.problem, self.prompt),
                              open_session=self._open_session if self.prompt.python else None,
                              new_request_id=new_id)
        yield from scheduler.run(tasks)

    def run(self, problems: Sequence[str] | str, n: int = 1, seed: int | None = 0) -> list[list[Result]]:
        """Every problem times ``n`` samples in one run: ``results[i][j]`` is problem i, sample j (seed seed+j)."""
        if isinstance(problems, str):
            problems = [problems]
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        tasks = [Task(p, None if seed is None else seed + j, (i, j)) for i, p in enumerate(problems)
                 for j in range(n)]
        results: list[list[Result | None]] = [[None] * n for _ in problems]
        for task, result in self.stream(tasks):
            i, j = task.key
            results[i][j] = result
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Stop the session pool this agent started (the engine stays usable: it may be the caller's)."""
        with self._pool_lock:
            if self._pool is not None and self._own_pool:
                self._pool.close()
                self._pool = None

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _counter():
    import itertools

    ids = itertools.count()
    return lambda: f"req-{next(ids)}"


_ENGINES: dict[tuple, VLLMEngine] = {}


def solve(problem: str, *, model: str | None = None, llm: Any = None, engine_kwargs: dict[str, Any] | None = None,
          seed: int | None = 0, **agent_kwargs: Any) -> Result:
    """Solve one problem and return its :class:`Result`.

    The engine built for ``model`` is kept for the next call with the same model and engine arguments, so
    calling ``solve`` in a notebook loop loads the weights once.

    >>> result = solve("What is 2**100 mod 7?", model="openai/gpt-oss-20b")   # doctest: +SKIP
    >>> result.answer, result.finish_reason                                    # doctest: +SKIP
    ('2', 'final')
    """
    engine = None
    if llm is None:
        if model is None:
            raise ValueError("solve() needs model= (a name or path) or llm= (a vllm.LLM)")
        key = (model, repr(sorted((engine_kwargs or {}).items())))  # values may be unhashable (dicts)
        if key not in _ENGINES:
            _ENGINES[key] = VLLMEngine.from_model(model, **(engine_kwargs or {}))
        engine = _ENGINES[key]
    with Agent(llm=llm, engine=engine, **agent_kwargs) as agent:
        return agent.run([problem], n=1, seed=seed)[0][0]
