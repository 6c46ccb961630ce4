"""The continuous scheduler: many trajectories, one engine, tools run beside decoding.

Each live trajectory has at most one request in the engine. When a request stops on ``<|call|>`` its code goes
to the trajectory's session on a worker thread and the engine keeps decoding the others; when the output comes
back the trajectory is re-submitted with the tool tokens appended (prefix caching makes that cheap). There is
no round barrier anywhere.
"""
from __future__ import annotations

import queue
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from . import tool_messages as tm
from .config import LoopConfig, Sampling
from .encoding import CALL
from .engine import Completion, Engine, Request
from .parsing import ToolCall, find_tool_call, parse_completion
from .result import Result, ToolCallRecord
from .trajectory import Trajectory

_SEED_MOD = 2**31 - 1


@dataclass
class _Live:
    """A trajectory in flight."""

    task: Any
    trajectory: Trajectory
    started_at: float
    messages: list = field(default_factory=list)
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    calls_requested: int = 0
    told_limit: bool = False
    turn: int = 0
    session: Any = None
    request_id: str | None = None
    prompt_tokens_prefilled: int = 0
    prompt_tokens_cached: int = 0

    @property
    def generated(self) -> int:
        return self.trajectory.num_model_tokens


@dataclass
class _ToolDone:
    """A python call that came back: what the model reads, and the record (None when the runtime failed)."""

    live: _Live
    call: ToolCall
    reply: str
    record: ToolCallRecord | None


class Scheduler:
    """Runs tasks to completion on ``engine``, yielding ``(task, Result)`` in the order they finish.

    ``render(task) -> prompt ids`` and ``open_session() -> session`` come from the :class:`~harmony_agent.Agent`.
    """

    def __init__(self, engine: Engine, sampling: Sampling, config: LoopConfig,
                 render: Callable[[Any], list[int]], open_session: Callable[[], Any] | None,
                 new_request_id: Callable[[], str]):
        self.engine = engine
        self.sampling = sampling
        self.config = config
        self.render = render
        self.open_session = open_session
        self.new_request_id = new_request_id

    def run(self, tasks: Iterable[Any]) -> Iterator[tuple[Any, Result]]:
        pending = iter(tasks)
        live: dict[str, _Live] = {}          # request id -> trajectory with a request in the engine
        in_tools: dict[int, _Live] = {}      # trajectories whose call is running, by id()
        ready: deque[_Live] = deque()        # trajectories to (re)submit
        finished: deque[tuple[Any, Result]] = deque()
        tool_done: queue.SimpleQueue[_ToolDone] = queue.SimpleQueue()
        workers = ThreadPoolExecutor(max_workers=max(1, self.config.max_concurrent),
                                     thread_name_prefix="harmony-tool")
        exhausted = False
        try:
            while True:
                # Admit new tasks while there is room.
                while not exhausted and len(live) + len(in_tools) + len(ready) < self.config.max_concurrent:
                    task = next(pending, None)
                    if task is None:
                        exhausted = True
                        break
                    ready.append(_Live(task, Trajectory.from_prompt(self.render(task)), time.time()))
                while ready:
                    self._submit(ready.popleft(), live, finished)
                while finished:
                    yield finished.popleft()

                if live and self.engine.has_unfinished():
                    for completion in self.engine.step():
                        state = live.pop(completion.request_id, None)
                        if state is not None:
                            self._on_completion(state, completion, ready, finished, in_tools, tool_done, workers)
                elif in_tools:
                    self._on_tool_done(tool_done.get(), ready, finished, in_tools)
                elif live:  # the engine holds none of our requests any more: they were aborted outside
                    for state in live.values():
                        self._finish(state, "error", finished, error="the engine dropped the request")
                    live.clear()
                elif exhausted and not ready and not finished:
                    return
                while True:  # tools that finished meanwhile, without waiting
                    try:
                        done = tool_done.get_nowait()
                    except queue.Empty:
                        break
                    self._on_tool_done(done, ready, finished, in_tools)
        finally:  # normal end, an error, or the consumer stopped early (GeneratorExit, Ctrl-C)
            self.engine.abort(list(live))
            for state in [*live.values(), *ready, *in_tools.values()]:
                self._close_session(state)  # also stops a cell that is still running
            workers.shutdown(wait=True, cancel_futures=True)
            while not tool_done.empty():
                self._close_session(tool_done.get_nowait().live)

    # -- engine side ---------------------------------------------------------------------------------------

    def _submit(self, state: _Live, live: dict[str, _Live], finished: deque) -> None:
        """Send the trajectory to the engine, or finish it when no budget is left."""
        budget = self.config.max_tokens - state.generated
        room = self.engine.max_model_len - len(state.trajectory)
        if budget <= 0:
            return self._finish(state, "length", finished)
        if room <= 0:
            return self._finish(state, "context", finished)
        seed = None
        if getattr(state.task, "seed", None) is not None:
            seed = (int(state.task.seed) + state.turn * 1_000_003) % _SEED_MOD
        state.request_id = self.new_request_id()
        state.turn += 1
        self.engine.submit(Request(state.request_id, list(state.trajectory.token_ids), min(budget, room), seed),
                           self.sampling)
        live[state.request_id] = state

    def _on_completion(self, state: _Live, completion: Completion, ready: deque, finished: deque,
                       in_tools: dict[int, _Live], tool_done: queue.SimpleQueue,
                       workers: ThreadPoolExecutor) -> None:
        ids = completion.token_ids
        state.prompt_tokens_cached += completion.cached_tokens  # the request's prompt is the whole trajectory
        state.prompt_tokens_prefilled += len(state.trajectory) - completion.cached_tokens
        state.trajectory.append_model(ids, completion.logprobs)
        parsed = parse_completion(ids)
        state.messages.extend(parsed.messages)
        if completion.finish == "abort":
            return self._finish(state, "error", finished, error="request aborted by the engine")
        if completion.finish == "length":
            reason = "length" if state.generated >= self.config.max_tokens else "context"
            return self._finish(state, reason, finished)
        if not ids or ids[-1] != CALL:  # <|return|> (or the model's EOS): the answer is given
            return self._finish(state, "final", finished)
        call = find_tool_call(parsed, ids)
        state.calls_requested += 1
        if state.calls_requested > self.config.max_tool_calls:
            if state.told_limit:
                return self._finish(state, "max_tool_calls", finished)
            state.told_limit = True
            return self._reply(state, call, tm.calls_exhausted(self.config.max_tool_calls), ready, finished)
        error = self._call_error(call)
        if error is not None:
            return self._reply(state, call, error, ready, finished)
        in_tools[id(state)] = state
        workers.submit(self._execute, state, call, tool_done)

    def _call_error(self, call: ToolCall) -> str | None:
        """The message for a call that cannot run, or None for a python call that can."""
        if call.error is not None:
            return tm.malformed_call(call.error)
        if call.recipient is None:
            return tm.missing_recipient()
        if self.open_session is None:
            return tm.python_disabled(call.recipient)
        if call.recipient != tm.PYTHON:
            return tm.unknown_recipient(call.recipient)
        return None

    def _reply(self, state: _Live, call: ToolCall, text: str, ready: deque, finished: deque) -> None:
        """Answer ``call`` with a tool message (and ``<|start|>assistant``); queue the trajectory again."""
        message = tm.tool_message(tm.reply_author(call.recipient), text, call.channel)
        tokens = tm.render_reply(message)
        if len(state.trajectory) + len(tokens) >= self.engine.max_model_len:
            return self._finish(state, "context", finished)
        state.trajectory.append_tool(tokens)
        state.messages.append(message)
        ready.append(state)

    # -- tool side -----------------------------------------------------------------------------------------

    def _execute(self, state: _Live, call: ToolCall, tool_done: queue.SimpleQueue) -> None:
        """Worker thread: run the code in the trajectory's session (opened on its first call)."""
        try:
            if state.session is None:
                state.session = self.open_session()
            result = state.session.run(call.text, timeout=self.config.tool_timeout)
        except Exception as exc:  # the runtime itself failed: tell the model, keep the run going
            tool_done.put(_ToolDone(state, call, tm.runtime_failure(f"{type(exc).__name__}: {exc}"), None))
            return
        record = ToolCallRecord(call.text, result.output, result.status, result.seconds, result.state_lost)
        tool_done.put(_ToolDone(state, call, result.output, record))

    def _on_tool_done(self, done: _ToolDone, ready: deque, finished: deque, in_tools: dict[int, _Live]) -> None:
        state = done.live
        in_tools.pop(id(state), None)
        if done.record is not None:
            state.tool_calls.append(done.record)
        self._reply(state, done.call, done.reply, ready, finished)

    # -- end -----------------------------------------------------------------------------------------------

    def _close_session(self, state: _Live) -> None:
        if state.session is not None:
            try:
                state.session.close()
            except Exception:
                pass
            state.session = None

    def _finish(self, state: _Live, reason: str, finished: deque, error: str | None = None) -> None:
        self._close_session(state)
        result = Result(
            problem=getattr(state.task, "problem", None),
            seed=getattr(state.task, "seed", None),
            trajectory=state.trajectory,
            messages=state.messages,
            tool_calls=state.tool_calls,
            finish_reason=reason,
            started_at=state.started_at,
            finished_at=time.time(),
            error=error,
            prompt_tokens_prefilled=state.prompt_tokens_prefilled,
            prompt_tokens_cached=state.prompt_tokens_cached,
        )
        finished.append((state.task, result))
