"""The continuous scheduler: many trajectories, one engine, tools run beside decoding.

Each live trajectory (a :class:`~harmony_agent.rollout.Rollout`) has at most one request in the engine. When a
request stops on ``<|call|>`` its code goes to the trajectory's session on a worker thread and the engine keeps
decoding the others; when the output comes back the trajectory is re-submitted with the tool tokens appended
(prefix caching makes that cheap). There is no round barrier anywhere.

Failure semantics: a fault confined to one trajectory (its completion, its request, its reply) finishes it with
``finish_reason="error"`` and closes its session; the others run on. A call that gets no answer within
``tool_timeout + tool_grace`` is answered as a runtime failure. An engine that fails (``step`` raises) ends the
run with :class:`~harmony_agent.errors.EngineFailure` carrying the unfinished tasks. Cleanup (abort requests,
close sessions) runs each step on its own and never replaces the error that ended the run; it does not wait for
running cells.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .config import LoopConfig, Sampling
from .engine import Engine
from .errors import EngineFailure
from .result import Result
from .rollout import Phase, Rollout, ToolOutcome, close_quietly, failed_call, run_tool_call

logger = logging.getLogger(__name__)

#: How often (seconds) the loop looks for calls past their deadline.
_DEADLINE_CHECK_EVERY = 0.5


class Scheduler:
    """Runs tasks to completion on ``engine``, yielding ``(task, Result)`` in the order they finish.

    ``start(task) -> Rollout`` and ``open_session() -> session`` come from the :class:`~harmony_agent.Agent`.
    """

    def __init__(
        self,
        engine: Engine,
        sampling: Sampling,
        config: LoopConfig,
        start: Callable[[Any], Rollout],
        open_session: Callable[[], Any] | None,
        new_request_id: Callable[[], str],
    ):
        self.engine = engine
        self.sampling = sampling
        self.config = config
        self.start = start
        self.open_session = open_session
        self.new_request_id = new_request_id

    def run(self, tasks: Iterable[Any]) -> Iterator[tuple[Any, Result]]:
        pending = iter(tasks)
        active: dict[int, Rollout] = {}  # every unfinished rollout, in the order it started
        live: dict[str, Rollout] = {}  # request id -> rollout with a request in the engine
        in_tools: dict[int, tuple[Rollout, float]] = {}  # rollouts whose call runs, with its deadline
        ready: deque[Rollout] = deque()
        finished: deque[tuple[Any, Result]] = deque()
        tool_done: queue.SimpleQueue[tuple[Rollout, int, ToolOutcome]] = queue.SimpleQueue()
        exhausted = False
        next_deadline_check = time.monotonic() + _DEADLINE_CHECK_EVERY

        def route(r: Rollout) -> None:
            """Put a rollout where its phase says."""
            if r.phase is Phase.READY:
                ready.append(r)
            elif r.phase is Phase.TOOL:
                in_tools[id(r)] = (r, time.monotonic() + self.config.tool_deadline)
                threading.Thread(
                    target=self._execute, args=(r, r.calls_requested, tool_done), daemon=True, name="harmony-tool"
                ).start()
            elif r.phase is Phase.FINISHED:
                active.pop(id(r), None)
                close_quietly(r.take_session(final=True))
                assert r.result is not None
                finished.append((r.task, r.result))

        def guarded(r: Rollout, step: Callable[[], Any], what: str) -> None:
            """Run one step of one rollout (an exception finishes that rollout alone), then route it."""
            r.attempt(step, what)
            route(r)

        try:
            while True:
                while not exhausted and len(active) < self.config.max_concurrent:
                    try:
                        task = next(pending)
                    except StopIteration:
                        exhausted = True
                        break
                    r = self.start(task)
                    active[id(r)] = r
                    ready.append(r)
                while ready:
                    r = ready.popleft()
                    guarded(r, functools.partial(self._submit, r, live), "submitting the request")
                while finished:
                    yield finished.popleft()

                try:
                    stepping = bool(live) and self.engine.has_unfinished()
                    completions = self.engine.step() if stepping else []
                except Exception as exc:
                    raise self._failure(exc, active) from exc
                if stepping:
                    for completion in completions:
                        mine = live.pop(completion.request_id, None)
                        if mine is not None:  # others are not ours (a shared engine)
                            guarded(mine, functools.partial(mine.on_completion, completion), "handling the completion")
                elif in_tools:
                    wait = max(0.0, min(d for _, d in in_tools.values()) - time.monotonic())
                    try:
                        self._on_tool_done(tool_done.get(timeout=min(wait, 1.0) + 0.01), in_tools, guarded)
                    except queue.Empty:
                        pass
                elif live:  # the engine holds none of our requests any more: they were aborted outside
                    for r in live.values():
                        r.fail("the engine dropped the request")
                        route(r)
                    live.clear()
                elif exhausted and not ready and not finished:
                    return
                while True:  # tools that finished meanwhile, without waiting
                    try:
                        done = tool_done.get_nowait()
                    except queue.Empty:
                        break
                    self._on_tool_done(done, in_tools, guarded)
                now = time.monotonic()
                if in_tools and now >= next_deadline_check:
                    next_deadline_check = now + _DEADLINE_CHECK_EVERY
                    for r, deadline in list(in_tools.values()):
                        if now >= deadline:
                            self._give_up(r, in_tools, guarded)
        finally:  # normal end, an error, or the consumer stopped early (GeneratorExit, Ctrl-C)
            self._cleanup(live, active)

    @staticmethod
    def _failure(exc: Exception, active: dict[int, Rollout]) -> EngineFailure:
        return EngineFailure(
            f"the engine failed during the run ({type(exc).__name__}: {exc}); {len(active)} "
            "unfinished task(s) are in this error's .unfinished",
            [r.task for r in active.values()],
        )

    # -- steps -----------------------------------------------------------------------------------------------

    def _submit(self, r: Rollout, live: dict[str, Rollout]) -> None:
        """Send the rollout's next request to the engine (unless it finished on a budget)."""
        request_id = self.new_request_id()
        if request_id in live:
            raise ValueError(
                f"request id {request_id!r} is already in use by a running request: the engine's "
                "new_request_id must return ids unique per engine"
            )
        request = r.next_request(request_id)
        if request is None:
            return
        try:
            self.engine.submit(request, self.sampling)
        except Exception:
            r.request_id = None
            raise
        live[request_id] = r

    def _execute(self, r: Rollout, serial: int, tool_done: queue.SimpleQueue) -> None:
        """Worker thread: run the call; whatever happens, one outcome goes to ``tool_done``."""
        call = r.call
        try:
            assert call is not None and self.open_session is not None
            outcome = run_tool_call(r, call, self.open_session, self.config.tool_timeout)
        except BaseException as exc:  # noqa: BLE001 - run_tool_call does not raise; belt and braces
            outcome = failed_call(getattr(call, "text", ""), f"{type(exc).__name__}: {exc}", 0.0)
        tool_done.put((r, serial, outcome))

    def _on_tool_done(self, done: tuple[Rollout, int, ToolOutcome], in_tools: dict, guarded) -> None:
        r, serial, outcome = done
        if r.phase is not Phase.TOOL or serial != r.calls_requested or id(r) not in in_tools:
            return  # a late answer to a call that was given up on, or a run that ended
        if outcome.fatal is not None:
            raise outcome.fatal
        del in_tools[id(r)]
        guarded(r, lambda: r.on_tool_outcome(outcome), "handling the tool output")

    def _give_up(self, r: Rollout, in_tools: dict, guarded) -> None:
        """A call got no answer in time: close its session (off this thread) and tell the model."""
        del in_tools[id(r)]
        session = r.take_session(final=False)
        if session is not None:
            threading.Thread(target=close_quietly, args=(session,), daemon=True).start()
        seconds = self.config.tool_deadline
        outcome = failed_call(
            r.call.text if r.call else "", f"no answer within {seconds:g} s", seconds, state_lost=session is not None
        )
        guarded(r, lambda: r.on_tool_outcome(outcome), "handling the tool output")

    def _cleanup(self, live: dict[str, Rollout], active: dict[int, Rollout]) -> None:
        """Abort our requests and close every session; each step runs even when another one fails."""
        try:
            if live:
                self.engine.abort(list(live))
        except BaseException as exc:  # noqa: BLE001 - a dead engine must not keep sessions open
            logger.warning("aborting %d request(s) failed: %s: %s", len(live), type(exc).__name__, exc)
        for r in list(active.values()):
            close_quietly(r.take_session(final=True))  # also stops a cell that is still running
