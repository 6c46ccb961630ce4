"""Session: the parent-side handle of one persistent IPython session, and the run/timeout/restart logic.

A Session survives its process: when the process has to be killed (a cell ignored the interrupt) or dies on its
own (segfault, os._exit, out of memory), the Session gets a fresh process forked from the template and the
result says `state_lost=True`, with a text telling the model that its variables are gone.
"""
from __future__ import annotations

import asyncio
import functools
import os
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from . import result as texts
from .child import MAX_REQUEST_BYTES, max_reply_bytes
from .protocol import FrameReader, PeerClosed, ProtocolError, encode
from .result import ExecResult

if TYPE_CHECKING:
    from .pool import SessionPool


class SessionClosedError(RuntimeError):
    """The session (or its pool) was closed."""


class _Proc:
    """One live session process: its channel, its pidfd (race-free signals) and what it reported at start."""

    def __init__(self, sock: socket.socket, pidfd: int, pid: int, uid: int, workdir: str, max_output_chars: int):
        self.sock = sock
        self.pidfd = pidfd
        self.pid = pid
        self.uid = uid
        self.workdir = workdir
        self.reader = FrameReader(sock, max_reply_bytes(max_output_chars))
        self.facts: dict[str, Any] = {}
        self.released = False

    @property
    def session_pid(self) -> int:
        """The process running the cells; `pid` is the first process of the session (its PID-namespace init
        when there is one), which the template reaps and the parent signals."""
        pid = self.facts.get("pid")
        return pid if isinstance(pid, int) else self.pid

    def signal(self, sig: int) -> None:
        try:
            signal.pidfd_send_signal(self.pidfd, sig)
        except (ProcessLookupError, OSError):
            pass

    def close_fds(self) -> None:
        for close in (self.sock.close, lambda: os.close(self.pidfd)):
            try:
                close()
            except OSError:
                pass
        self.pidfd = -1


class Session:
    """A persistent IPython session. `run` is blocking and thread-safe (calls on one session are serialized)."""

    def __init__(self, pool: "SessionPool", proc: _Proc):
        self._pool = pool
        self._proc: _Proc | None = proc
        self._lock = threading.Lock()
        self._closed = False
        self._next_id = 0
        self.restarts = 0

    # ----------------------------------------------------------------------------------------- facts
    @property
    def pid(self) -> int | None:
        """Host pid of the process running the cells (changes after a restart)."""
        return self._proc.session_pid if self._proc else None

    @property
    def workdir(self) -> str | None:
        """The session's private working directory (a new one after a restart)."""
        return self._proc.workdir if self._proc else None

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"<Session pid={self.pid} closed={self._closed} restarts={self.restarts}>"

    # ----------------------------------------------------------------------------------------- run
    def run(self, code: str, timeout: float | None = None) -> ExecResult:
        """Run one cell; `timeout` (seconds) overrides the pool's default for this call only."""
        if not isinstance(code, str):
            raise TypeError(f"code must be str, not {type(code).__name__}")
        limit = self._pool.timeout if timeout is None else float(timeout)
        if not limit > 0:
            raise ValueError("timeout must be > 0")
        with self._lock:
            if self._closed:
                raise SessionClosedError("session is closed")
            if self._proc is None:  # an earlier restart failed; try again now
                self._proc = self._pool._spawn()
            return self._run_locked(self._proc, code, limit)

    async def arun(self, code: str, timeout: float | None = None) -> ExecResult:
        """`await session.arun(code)`: `run` on the pool's thread pool, so the event loop never blocks."""
        if self._closed or self._pool.closed:
            raise SessionClosedError("session is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool._executor(), functools.partial(self.run, code, timeout))

    def _run_locked(self, proc: _Proc, code: str, limit: float) -> ExecResult:
        self._next_id += 1
        rid = self._next_id
        try:
            frame = encode({"op": "run", "id": rid, "code": code}, MAX_REQUEST_BYTES)
        except ProtocolError:
            raise ValueError(f"code is too large (the limit is {MAX_REQUEST_BYTES >> 20} MiB)") from None
        start = time.monotonic()
        try:
            proc.sock.sendall(frame)
            reply = self._await_done(proc, rid, start + limit)
            return self._finish(reply, time.monotonic() - start)
        except TimeoutError:
            pass
        except (PeerClosed, OSError) as exc:
            return self._crashed(proc, start, None, exc)
        except ProtocolError as exc:
            return self._crashed(proc, start, str(exc), exc)

        # Timed out: interrupt (keeps state) ...
        proc.signal(signal.SIGINT)
        try:
            reply = self._await_done(proc, rid, time.monotonic() + self._pool.interrupt_grace)
        except TimeoutError:
            reply = None
        except (PeerClosed, OSError, ProtocolError):
            reply = None
        seconds = time.monotonic() - start
        if reply is not None:
            if not reply.get("interrupted"):
                return self._finish(reply, seconds)  # it finished on its own just as the limit passed
            return ExecResult(texts.timeout_kept(self._cell_text(reply), limit), "timeout", False, seconds)
        # ... or, when the cell does not stop, kill the session and start a fresh one (state lost).
        self._check_not_closed()
        self._replace(proc, kill=True)
        return ExecResult(texts.timeout_lost(limit), "timeout", True, seconds)

    def _await_done(self, proc: _Proc, rid: int, deadline: float) -> dict[str, Any]:
        frame = proc.reader.read(deadline)
        if frame.get("op") != "done" or frame.get("id") != rid:
            raise ProtocolError(f"unexpected frame {str(frame.get('op'))[:40]!r}")
        return frame

    def _cell_text(self, reply: dict[str, Any]) -> str:
        """The cell's own output from an untrusted reply: a valid string, cut to the limit with the marker."""
        limit = self._pool.max_output_chars
        output = reply.get("output")
        output = output if isinstance(output, str) else ""
        output = output.encode("utf-8", "replace").decode("utf-8")
        cut = reply.get("cut") is True or len(output) > limit
        return texts.cell_text(output[:limit], cut)

    def _finish(self, reply: dict[str, Any], seconds: float) -> ExecResult:
        status = reply.get("status") if reply.get("status") in ("ok", "error") else "error"
        return ExecResult(self._cell_text(reply), status, False, seconds)

    def _crashed(self, proc: _Proc, start: float, protocol_error: str | None, exc: BaseException) -> ExecResult:
        seconds = time.monotonic() - start
        self._check_not_closed()
        status = self._replace(proc, kill=protocol_error is not None)
        reason = texts.crash_reason(status, protocol_error=protocol_error)
        return ExecResult(texts.crashed(reason), "crashed", True, seconds)

    def _check_not_closed(self) -> None:
        if self._closed:
            raise SessionClosedError("session was closed while the cell was running")

    def _replace(self, proc: _Proc, *, kill: bool) -> dict[str, Any] | None:
        """Retire `proc` (reap it, remove its files) and fork a fresh session; returns how `proc` ended."""
        if kill:
            self._pool._kill_proc(proc)
        status = self._pool._release_proc(proc)
        self._proc = None
        self.restarts += 1
        try:
            self._proc = self._pool._spawn()
        except Exception:  # noqa: BLE001 - the next run() retries and raises if it still fails
            self._proc = None
        return status

    # ----------------------------------------------------------------------------------------- close
    def close(self) -> None:
        """Kill the session process, remove its working directory, free its pool slot. Idempotent."""
        with self._pool._lock:
            if self._closed:
                return
            self._closed = True
        proc = self._proc
        if proc is not None:
            self._pool._kill_proc(proc)  # stops a running cell now; that run() raises SessionClosedError
        with self._lock:
            if self._proc is not None:
                self._pool._release_proc(self._proc)
                self._proc = None
        self._pool._forget(self)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
