"""``Agent`` and ``solve``: the public entry points of the loop."""

from __future__ import annotations

import datetime as _dt
import itertools
import logging
import os
import random
import threading
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, fields, replace
from typing import Any

from .config import LoopConfig, PromptConfig, Sampling
from .encoding import get_encoding
from .engine import Engine, VLLMEngine
from .errors import ToolRuntimeError
from .prompt import check_problem, render_prompt
from .result import Result
from .rollout import Rollout
from .scheduler import Scheduler

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """One trajectory to run: the input, its sampling seed and a key of the caller's.

    ``problem`` is a problem string (one user message) or a conversation: a list of Harmony ``Message``s or
    OpenAI-style dicts with roles system/developer/user/assistant (see :mod:`harmony_agent.prompt`). It is
    checked here, so a bad input fails before anything runs. ``seed=None``: unseeded sampling.
    """

    problem: Any
    seed: int | None = None
    key: Hashable = None

    def __post_init__(self) -> None:
        check_problem(self.problem)
        if self.seed is not None and not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int or None, got {type(self.seed).__name__}")


def apply_shortcuts(
    prompt: PromptConfig, sampling: Sampling, loop: LoopConfig, shortcuts: dict[str, Any]
) -> tuple[PromptConfig, Sampling, LoopConfig]:
    """Apply flat keyword shortcuts (``temperature=0.6``, ``max_tool_calls=5``) to the configuration object
    that owns each name; an unknown name is a TypeError that lists the valid ones.

    >>> p, s, l = apply_shortcuts(PromptConfig(), Sampling(), LoopConfig(), {"temperature": 0.5, "python": False})
    >>> s.temperature, p.python, l.max_tool_calls
    (0.5, False, 100)
    """
    objects: list[Any] = [prompt, sampling, loop]
    owners = {f.name: i for i, obj in enumerate(objects) for f in fields(obj)}
    unknown = sorted(set(shortcuts) - set(owners))
    if unknown:
        raise TypeError(f"unknown Agent argument(s) {', '.join(unknown)}; valid: {', '.join(sorted(owners))}")
    for i, obj in enumerate(objects):
        mine = {k: v for k, v in shortcuts.items() if owners[k] == i}
        if mine:
            objects[i] = replace(obj, **mine)
    return objects[0], objects[1], objects[2]


class Agent:
    """gpt-oss with python as a builtin, stateful tool, over one engine.

    Give it your own ``vllm.LLM`` (``llm=``), a model to load (``model=`` plus ``engine_kwargs`` for
    ``vllm.LLM``), or any :class:`~harmony_agent.engine.Engine` (``engine=``). Settings come as
    ``prompt=PromptConfig(...)``, ``sampling=Sampling(...)`` and ``loop=LoopConfig(...)``; any of their fields may
    also be passed flat (``temperature=0.6``), overriding the object's value. A problem is a string or a
    conversation (a list of OpenAI-style dicts or Harmony messages).

    >>> agent = Agent(model="openai/gpt-oss-20b", reasoning_effort="high")          # doctest: +SKIP
    >>> results = agent.run(["What is 2**100 mod 7?"], n=4, seed=0)                  # doctest: +SKIP
    >>> results[0][0].answer                                                          # doctest: +SKIP
    '2'
    """

    def __init__(
        self,
        llm: Any = None,
        *,
        model: str | None = None,
        engine: Engine | None = None,
        engine_kwargs: dict[str, Any] | None = None,
        prompt: PromptConfig | None = None,
        sampling: Sampling | None = None,
        loop: LoopConfig | None = None,
        session_pool: Any = None,
        **shortcuts: Any,
    ):
        if sum(x is not None for x in (llm, model, engine)) != 1:
            raise ValueError("pass exactly one of llm= (a vllm.LLM), model= (a name or path) or engine=")
        prompt, sampling, loop = apply_shortcuts(
            prompt or PromptConfig(), sampling or Sampling(), loop or LoopConfig(), shortcuts
        )
        # the date is fixed once per agent, so a run that crosses midnight renders every prompt alike
        if prompt.conversation_start_date is None:
            prompt = replace(prompt, conversation_start_date=_dt.date.today().isoformat())
        self.prompt = prompt
        self.sampling = sampling
        self.config = loop
        get_encoding()  # fail now, with the fix in the message, if the vocabulary is missing
        if engine is None:
            assert llm is not None or model is not None  # exactly one of llm/model/engine, checked above
            engine = (
                VLLMEngine(llm)
                if llm is not None
                else VLLMEngine.from_model(
                    str(model), **{"logprobs_mode": sampling.logprobs_mode, **(engine_kwargs or {})}
                )
            )
        check = getattr(engine, "check_sampling", None)
        if check is not None:
            check(sampling)  # e.g. a logprobs_mode the engine was not built with: fail before anything runs
        self.engine = engine
        self._pool = session_pool
        self._own_pool = session_pool is None
        self._pool_lock = threading.Lock()

    # -- sessions ------------------------------------------------------------------------------------------

    def _ensure_pool(self) -> None:
        """Start the session pool (once) before a run that may call python; fail at once if it cannot start."""
        with self._pool_lock:
            if self._pool is not None:
                if getattr(self._pool, "closed", False) is True:
                    raise ToolRuntimeError(
                        "the session pool given as session_pool= is closed: pass an open pool, "
                        "or run without tools with python=False"
                    )
                return
            try:
                from tool_runtime import SessionPool

                self._pool = SessionPool(
                    max_sessions=self.config.max_concurrent,
                    timeout=self.config.tool_timeout,
                    max_output_chars=self.config.max_output_chars,
                )
            except Exception as exc:
                raise ToolRuntimeError(
                    f"the python tool runtime could not start ({type(exc).__name__}: {exc}); fix the tool runtime "
                    "(see docs/tool_runtime.md), or run without tools with python=False"
                ) from exc

    def _open_session(self):
        pool = self._pool
        if pool is None or getattr(pool, "closed", False) is True:
            raise ToolRuntimeError("the session pool was closed during the run: no call can run any more")
        return pool.open()

    # -- running -------------------------------------------------------------------------------------------

    def stream(self, tasks: Iterable[Task | Any]) -> Iterator[tuple[Task, Result]]:
        """Run every task in one continuous run; yield ``(task, result)`` as each trajectory finishes.

        ``tasks`` is any iterable (a generator too) of :class:`Task`, problem strings or message lists; it is read
        as room frees up. Stopping the iteration early aborts the requests still running and closes their
        sessions at once. A trajectory that meets a fault of its own ends with ``finish_reason="error"``; an
        engine failure raises :class:`~harmony_agent.errors.EngineFailure` with the unfinished tasks.
        """
        if self.prompt.python:
            self._ensure_pool()
        max_model_len = int(self.engine.max_model_len)
        prompts = _PromptCache(self.prompt)

        def start(task: Task) -> Rollout:
            return Rollout(
                task,
                prompts.render(task.problem),
                loop=self.config,
                python=self.prompt.python,
                max_model_len=max_model_len,
                seed=task.seed,
                problem=task.problem,
            )

        scheduler = Scheduler(
            self.engine,
            self.sampling,
            self.config,
            start=start,
            open_session=self._open_session if self.prompt.python else None,
            new_request_id=getattr(self.engine, "new_request_id", None) or _new_request_id,
        )
        yield from scheduler.run(t if isinstance(t, Task) else Task(t) for t in tasks)

    def run(self, problems: Iterable[Any] | str, n: int = 1, seed: int | None = None) -> list[list[Result]]:
        """Every problem times ``n`` samples in one run: ``results[i][j]`` is problem i, sample j (seed seed+j).

        ``problems`` is any iterable of problem strings or message lists (or one problem string). Without
        ``seed`` a fresh base seed is drawn for each call (each call samples anew; ``Result.seed`` records the
        seed used, so a sample can be replayed); pass ``seed`` for reproducible runs (evaluations do).
        """
        if isinstance(problems, str):
            problems = [problems]
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        problems = list(problems)
        if seed is None:
            seed = fresh_seed()
        tasks = [Task(p, seed + j, (i, j)) for i, p in enumerate(problems) for j in range(n)]
        results: list[list[Result | None]] = [[None] * n for _ in problems]
        for task, result in self.stream(tasks):
            key: Any = task.key
            results[key[0]][key[1]] = result
        return results  # type: ignore[return-value]

    # -- weights (RL) ---------------------------------------------------------------------------------------

    def update_weights(self, named_tensors: Iterable[tuple[str, Any]] | dict) -> None:
        """Load a trainer's new weights (checkpoint names, e.g. ``model.state_dict()``) into the engine and reset
        its prefix cache, between two runs. See docs/rl.md."""
        update = getattr(self.engine, "update_weights", None)
        if update is None:
            raise TypeError(
                f"{type(self.engine).__name__} cannot load weights: update them yourself, then call "
                "agent.weights_updated()"
            )
        update(named_tensors)

    def weights_updated(self) -> None:
        """Call after changing the engine's weights yourself: drops the KV cached under the old weights, which a
        re-submitted prefix would otherwise reuse (a silent off-policy bug)."""
        reset = getattr(self.engine, "weights_updated", None)
        if reset is not None:
            reset()

    def close(self) -> None:
        """Stop the session pool this agent started (the engine stays usable: it may be the caller's)."""
        with self._pool_lock:
            if self._pool is not None and self._own_pool:
                self._pool.close()
                self._pool = None

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _PromptCache:
    """Renders each problem once: the ``n`` samples of a problem, which arrive together, share its prompt."""

    def __init__(self, config: PromptConfig):
        self.config = config
        self._last: tuple[Any, list[int]] | None = None

    def render(self, problem: Any) -> list[int]:
        if self._last is not None and (self._last[0] is problem or self._last[0] == problem):
            return self._last[1]
        ids = render_prompt(problem, self.config)
        self._last = (problem, ids)
        return ids


_SEEDS = random.SystemRandom()
_REQUEST_IDS = itertools.count()
_REQUEST_PREFIX = f"ha-{os.getpid()}-{random.SystemRandom().getrandbits(32):08x}-"


def fresh_seed() -> int:
    """A base seed from the OS's randomness (not the process's ``random`` state, which vLLM seeds)."""
    return _SEEDS.randrange(2**31 - 1)


def _new_request_id() -> str:
    """Request ids unique in the process, for engines without ``new_request_id`` (so any two runs sharing an
    engine never collide)."""
    return f"{_REQUEST_PREFIX}{next(_REQUEST_IDS)}"


_ENGINES: dict[tuple, VLLMEngine] = {}


def solve(
    problem: Any,
    *,
    model: str | None = None,
    llm: Any = None,
    engine_kwargs: dict[str, Any] | None = None,
    n: int | None = None,
    seed: int | None = None,
    **agent_kwargs: Any,
) -> Any:
    """Solve one problem (a string or a list of messages): its :class:`Result`, or ``n`` of them as a list.

    Settings are :class:`Agent`'s (``prompt=``, ``sampling=``, ``loop=`` or flat shortcuts). Without ``seed`` each
    call samples anew (``Result.seed`` records the seed drawn); sample j uses ``seed + j``. The engine built for
    ``model`` is kept for the next call with the same model and engine arguments, so calling ``solve`` in a
    notebook loop loads the weights once.

    >>> result = solve("What is 2**100 mod 7?", model="openai/gpt-oss-20b")   # doctest: +SKIP
    >>> result.answer, result.finish_reason                                    # doctest: +SKIP
    ('2', 'final')
    >>> [r.answer for r in solve("What is 2**100 mod 7?", model="openai/gpt-oss-20b", n=4)]  # doctest: +SKIP
    ['2', '2', '2', '2']
    """
    check_problem(problem)  # before an engine loads
    engine = None
    if llm is None:
        if model is None:
            raise ValueError("solve() needs model= (a name or path) or llm= (a vllm.LLM)")
        mode = agent_kwargs.get("logprobs_mode") or getattr(agent_kwargs.get("sampling"), "logprobs_mode", None)
        kwargs = {**({"logprobs_mode": mode} if mode else {}), **(engine_kwargs or {})}
        key = (model, repr(sorted(kwargs.items())))  # values may be unhashable (dicts)
        if key not in _ENGINES:
            _ENGINES[key] = VLLMEngine.from_model(model, **kwargs)
        engine = _ENGINES[key]
    with Agent(llm=llm, engine=engine, **agent_kwargs) as agent:
        row = agent.run([problem], n=1 if n is None else n, seed=seed)[0]
    return row[0] if n is None else row
