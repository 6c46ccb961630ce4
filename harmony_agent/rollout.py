"""One trajectory's logic as a state machine with explicit phases, independent of what drives it.

``READY`` (needs a request) -> ``GENERATING`` (one request in the engine) -> ``TOOL`` (a python call to run)
-> ``READY`` ... -> ``FINISHED``. A :class:`Rollout` decides everything about its trajectory: the request
(budgets, seed), what a completion means (a call, an answer, a budget end, garbage), the reply to a call, the
records, and the :class:`~harmony_agent.result.Result`. It does no I/O: a driver submits its requests, runs
its calls with :func:`run_tool_call` and closes its session. The synchronous
:class:`~harmony_agent.scheduler.Scheduler` is one driver; an asyncio driver can step the same object (running
:func:`run_tool_call` in an executor), so there is one copy of the per-trajectory logic.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import tool_messages as tm
from .config import LoopConfig
from .encoding import CALL
from .engine import Completion, Request
from .parsing import HarmonyParser, ToolCall
from .result import Result, ToolCallRecord
from .trajectory import Trajectory

logger = logging.getLogger(__name__)

_SEED_MOD = 2**31 - 1
_SESSION_STATUSES = ("ok", "error", "timeout", "crashed")


class Phase(enum.Enum):
    READY = "ready"
    GENERATING = "generating"
    TOOL = "tool"
    FINISHED = "finished"


@dataclass(frozen=True)
class ToolOutcome:
    """A python call that came back: what the model reads, and the record of it."""

    reply: str
    record: ToolCallRecord
    #: set when the tool runtime cannot work at all (the run must stop with it), else None
    fatal: BaseException | None = None


class Rollout:
    """A trajectory in flight: its tokens, messages, calls and phase (see the module docstring)."""

    def __init__(
        self,
        task: Any,
        prompt_ids: list[int],
        *,
        loop: LoopConfig,
        python: bool,
        max_model_len: int,
        seed: int | None = None,
        problem: Any = None,
    ):
        self.task = task
        self.problem = problem
        self.seed = seed
        self.loop = loop
        self.python = python
        self.max_model_len = max_model_len
        self.trajectory = Trajectory.from_prompt(prompt_ids)
        self.messages: list = []
        self.tool_calls: list[ToolCallRecord] = []
        self.phase = Phase.READY
        self.turn = 0
        self.calls_requested = 0
        self.told_limit = False
        self.request_id: str | None = None
        self.call: ToolCall | None = None  # the call to run while in TOOL
        self.result: Result | None = None
        self.started_at = time.time()
        self.prompt_tokens_prefilled = 0  # prompt tokens the engine computed, over all requests
        self.prompt_tokens_cached = 0  # ... and those it reused from its prefix cache
        self._parser = HarmonyParser()
        self._session: Any = None
        self._session_closed = False
        self._session_lock = threading.Lock()

    # -- engine side ---------------------------------------------------------------------------------------

    def next_request(self, request_id: str) -> Request | None:
        """READY -> GENERATING with the request to submit; or FINISHED (None) when no budget is left."""
        self._expect(Phase.READY)
        budget = self.loop.max_tokens - self.trajectory.num_model_tokens
        room = self.max_model_len - len(self.trajectory)
        if budget <= 0:
            self.finish("length")
            return None
        if room <= 0:
            self.finish("context")
            return None
        seed = None if self.seed is None else (int(self.seed) + self.turn * 1_000_003) % _SEED_MOD
        self.request_id = request_id
        self.turn += 1
        self.phase = Phase.GENERATING
        return Request(request_id, self.trajectory.snapshot(), min(budget, room), seed)

    def on_completion(self, completion: Completion) -> Phase:
        """GENERATING -> READY (a reply was appended), TOOL (``self.call`` is to run) or FINISHED."""
        self._expect(Phase.GENERATING)
        self.request_id = None
        # the request's prompt was the whole trajectory so far: what the engine reused of it, and what it computed
        cached = min(max(int(getattr(completion, "cached_tokens", 0) or 0), 0), len(self.trajectory))
        self.prompt_tokens_cached += cached
        self.prompt_tokens_prefilled += len(self.trajectory) - cached
        ids = list(completion.token_ids)
        logprobs = completion.logprobs
        if logprobs is not None and len(logprobs) != len(ids):
            self.finish("error", f"the engine returned {len(logprobs)} logprobs for {len(ids)} tokens")
            return self.phase
        self.trajectory.append_model(ids, None if logprobs is None else list(logprobs))
        parsed = self._parser.parse(ids)
        self.messages.extend(parsed.messages)
        finish = completion.finish
        if finish == "abort":
            return self.finish("error", "request aborted by the engine")
        if finish == "length":
            return self.finish("length" if self._budget_spent() else "context")
        if finish != "stop":
            return self.finish("error", f"the engine returned an unknown finish {str(finish)[:40]!r}")
        if not ids or ids[-1] != CALL:  # <|return|> (or the model's EOS): the answer is given
            return self.finish("final")
        # A call. Nothing could read a reply when the budget is spent or no reply fits the context: do not run it.
        if self._budget_spent():
            return self.finish("length")
        if len(self.trajectory) + tm.min_reply_tokens() >= self.max_model_len:
            return self.finish("context")
        call = parsed.call or ToolCall(None, None, None, "", error=parsed.error or "empty message")
        self.calls_requested += 1
        if self.calls_requested > self.loop.max_tool_calls:
            if self.told_limit:
                return self.finish("max_tool_calls")
            self.told_limit = True
            return self._reply(call, tm.calls_exhausted(self.loop.max_tool_calls))
        error = self._call_error(call)
        if error is not None:
            return self._reply(call, error)
        self.call = call
        self.phase = Phase.TOOL
        return self.phase

    def _budget_spent(self) -> bool:
        return self.trajectory.num_model_tokens >= self.loop.max_tokens

    def _call_error(self, call: ToolCall) -> str | None:
        """The message for a call that cannot run, or None for a python call that can."""
        if call.error is not None:
            return tm.malformed_call(call.error)
        if call.recipient is None:
            return tm.missing_recipient()
        if not self.python:
            return tm.python_disabled(call.recipient)
        if call.recipient != tm.PYTHON:
            return tm.unknown_recipient(call.recipient)
        return None

    # -- tool side -----------------------------------------------------------------------------------------

    def on_tool_outcome(self, outcome: ToolOutcome) -> Phase:
        """TOOL -> READY (the output was appended) or FINISHED (it does not fit)."""
        self._expect(Phase.TOOL)
        call, self.call = self.call, None
        self.tool_calls.append(outcome.record)
        assert call is not None
        return self._reply(call, outcome.reply)

    def _reply(self, call: ToolCall, text: str) -> Phase:
        """Append the tool message answering ``call`` and ``<|start|>assistant``; READY, or FINISHED (context)."""
        message = tm.tool_message(tm.reply_author(call.recipient), text, call.channel)
        tokens = tm.render_reply(message)
        if len(self.trajectory) + len(tokens) >= self.max_model_len:
            return self.finish("context")
        self.trajectory.append_tool(tokens)
        self.messages.append(message)
        self.phase = Phase.READY
        return self.phase

    # -- session (shared with the worker that runs a call) ---------------------------------------------------

    @property
    def session(self) -> Any:
        return self._session

    def adopt_session(self, session: Any) -> Any:
        """Keep a newly opened session; returns the one to use, or None when the trajectory has ended (then the
        caller closes ``session``)."""
        with self._session_lock:
            if self._session_closed:
                return None
            if self._session is None:
                self._session = session
            return self._session

    def take_session(self, *, final: bool) -> Any:
        """Detach the session for closing (``final``: no session may be adopted any more)."""
        with self._session_lock:
            session, self._session = self._session, None
            self._session_closed = self._session_closed or final
            return session

    # -- end -----------------------------------------------------------------------------------------------

    def attempt(self, step: Callable[[], Any], what: str) -> None:
        """Run one step of this rollout (done by its driver); an exception ends this trajectory alone, with
        ``finish_reason="error"`` and ``error`` saying what failed, and never reaches the other trajectories."""
        try:
            step()
        except Exception as exc:
            logger.warning(
                "%s failed for one trajectory (%s: %s); it ends with finish_reason='error'",
                what,
                type(exc).__name__,
                exc,
                exc_info=logger.isEnabledFor(logging.DEBUG),
            )
            self.fail(f"{what} failed: {type(exc).__name__}: {exc}")

    def fail(self, error: str) -> Phase:
        """Any phase -> FINISHED with ``finish_reason="error"``."""
        if self.phase is Phase.FINISHED:
            return self.phase
        return self.finish("error", error)

    def finish(self, reason: str, error: str | None = None) -> Phase:
        self.phase = Phase.FINISHED
        self.call = None
        self.result = Result(
            problem=self.problem,
            seed=self.seed,
            trajectory=self.trajectory,
            messages=self.messages,
            tool_calls=self.tool_calls,
            finish_reason=reason,
            started_at=self.started_at,
            finished_at=time.time(),
            error=error,
            prompt_tokens_prefilled=self.prompt_tokens_prefilled,
            prompt_tokens_cached=self.prompt_tokens_cached,
        )
        return self.phase

    def _expect(self, phase: Phase) -> None:
        if self.phase is not phase:
            raise RuntimeError(f"rollout is {self.phase.value}, not {phase.value}")


def close_quietly(session: Any) -> None:
    """Close a session; a failure is logged, never raised (cleanup steps must not stop each other). A Ctrl-C
    (KeyboardInterrupt) that lands while a session closes is the user's, not the session's: it goes on up."""
    if session is None:
        return
    try:
        session.close()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - whatever a session raises, the rest of the cleanup goes on
        logger.warning("closing a python session failed: %s: %s", type(exc).__name__, exc)


def failed_call(code: str, error: str, seconds: float, state_lost: bool = False) -> ToolOutcome:
    """The outcome of a call the tool runtime could not run: the model is told, the record says why."""
    reply = tm.runtime_failure(error)
    if state_lost:
        reply += " The python session was restarted: earlier variables are gone."
    return ToolOutcome(reply, ToolCallRecord(code, reply, "runtime_error", seconds, state_lost, error))


def run_tool_call(rollout: Rollout, call: ToolCall, open_session: Callable[[], Any], timeout: float) -> ToolOutcome:
    """Run ``call`` in the rollout's session (opened on its first call). Never raises: every path gives an outcome.

    Runs on a worker thread (or an executor): a session's ``run`` that raises anything (``SystemExit`` included)
    or returns something that is not an ``ExecResult`` becomes a ``runtime_error`` record, and that session is
    closed, so the next call starts a fresh one.
    """
    from .errors import ToolRuntimeError

    code = call.text
    start = time.monotonic()
    session = rollout.session
    try:
        if session is None:
            opened = open_session()
            session = rollout.adopt_session(opened)
            if session is not opened:
                close_quietly(opened)
            if session is None:
                return failed_call(code, "the run ended before the call started", time.monotonic() - start)
    except ToolRuntimeError as exc:
        outcome = failed_call(code, str(exc), time.monotonic() - start)
        return ToolOutcome(outcome.reply, outcome.record, fatal=exc)
    except BaseException as exc:  # noqa: BLE001 - the runtime failed; the model is told, the run goes on
        return failed_call(code, f"cannot open a session: {type(exc).__name__}: {exc}", time.monotonic() - start)
    try:
        result = session.run(code, timeout=timeout)
    except BaseException as exc:  # noqa: BLE001 - SystemExit/KeyboardInterrupt from in-process sessions too
        return _drop_session(rollout, session, code, f"{type(exc).__name__}: {exc}", start)
    output, status = getattr(result, "output", None), getattr(result, "status", None)
    seconds, state_lost = getattr(result, "seconds", None), getattr(result, "state_lost", False)
    if not (isinstance(output, str) and status in _SESSION_STATUSES and isinstance(seconds, (int, float))):
        return _drop_session(
            rollout, session, code, f"session.run returned {type(result).__name__}, not an ExecResult", start
        )
    output = tm.clean_text(output)
    return ToolOutcome(output, ToolCallRecord(code, output, status, float(seconds), bool(state_lost)))


def _drop_session(rollout: Rollout, session: Any, code: str, error: str, start: float) -> ToolOutcome:
    with rollout._session_lock:
        if rollout._session is session:
            rollout._session = None
    close_quietly(session)
    return failed_call(code, error, time.monotonic() - start, state_lost=True)
