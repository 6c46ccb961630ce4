"""Session: the parent-side handle of one persistent IPython session, and the run/timeout/restart logic.

A Session survives its process: when the process has to be killed (a cell ignored the interrupt, or the session
stopped reading its channel) or dies on its own (segfault, os._exit, out of memory), the Session gets a fresh
process forked from the template and the result says `state_lost=True`, with a text telling the model that its
variables are gone.

Every call is bounded: `run` returns by `timeout + interrupt_grace` after it was called, the sending of the code
included (the code is written without blocking while the reply is awaited). Each request carries a fresh random
id that the session echoes; frames without it are dropped, so nothing a cell writes on its channel can be taken
for the reply to a later request.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import select
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Literal

from . import result as texts
from .child import MAX_REQUEST_BYTES, max_reply_bytes
from .protocol import FrameReader, PeerClosed, ProtocolError, encode
from .result import ExecResult
from .timeouts import check_timeout, wait_fd

if TYPE_CHECKING:
    from .launcher import TemplateHandle
    from .pool import SessionPool

log = logging.getLogger(__name__)

EXIT_WAIT = 1.0  # seconds to wait for a killed session to be gone (the kernel ends it in milliseconds)
# A cell that ignores SIGINT is killed this long before `timeout + interrupt_grace`, so that the kill and the
# kernel ending the session fit in the bound and run() returns by it (the seed's sandbox: timeout + 0.5 s).
KILL_MARGIN = 0.1
CLOSE_WAIT = 2.0  # close(): seconds to wait for a run() in another thread to let go (it is woken by the kill),
# and then for the template to have removed the session's files (it may be busy)


class SessionClosedError(RuntimeError):
    """The session (or its pool) was closed."""


class _Proc:
    """One live session process: its channel, its pidfd (race-free signals) and what it reported at start.

    Its descriptors are closed only by the thread that holds the owning Session's lock (or by the pool before
    the process is handed to a Session): closing an fd another thread polls would let that thread read from
    whatever file next gets the same number. Signals go through `_fd_lock`, so they never hit a reused number."""

    def __init__(
        self,
        sock: socket.socket,
        pidfd: int,
        pid: int,
        uid: int,
        workdir: str,
        max_output_chars: int,
        template: TemplateHandle,
    ):
        self.sock = sock
        self.pidfd = pidfd
        self.pid = pid
        self.uid = uid
        self.workdir = workdir
        self.template = template
        self.reader = FrameReader(sock, max_reply_bytes(max_output_chars))
        self.facts: dict[str, Any] = {}
        self.released = False
        self._fd_lock = threading.Lock()

    @property
    def session_pid(self) -> int:
        """The process running the cells; `pid` is the first process of the session (its PID-namespace init
        when there is one), which the template reaps and the parent signals."""
        pid = self.facts.get("pid")
        return pid if isinstance(pid, int) else self.pid

    def signal(self, sig: int) -> None:
        with self._fd_lock:
            if self.pidfd < 0:
                return
            try:
                signal.pidfd_send_signal(self.pidfd, sig)
            except (ProcessLookupError, OSError):
                pass

    def wait_exit(self, deadline: float) -> bool:
        """Wait until the first process has exited (its pidfd turns readable); False at the deadline."""
        return self.pidfd >= 0 and bool(wait_fd(self.pidfd, select.POLLIN, deadline))

    def close_fds(self) -> None:
        with self._fd_lock:
            try:
                self.sock.close()
            except OSError:
                pass
            if self.pidfd >= 0:
                try:
                    os.close(self.pidfd)
                except OSError:
                    pass
            self.pidfd = -1


class _Call:
    """One request in flight: the part of its frame not yet written, and the id its reply must carry."""

    def __init__(self, proc: _Proc, rid: str, frame: bytes):
        self.proc = proc
        self.rid = rid
        self.unsent = memoryview(frame)
        self.stray = 0

    @property
    def sent(self) -> bool:
        return not self.unsent

    def wait(self, deadline: float) -> dict[str, Any]:
        """Write what is left of the request and read until its reply, both bounded by `deadline`.

        Frames that are not the reply to this request (left over from an earlier request, or forged by a cell)
        are dropped. Raises TimeoutError, PeerClosed (EOF or a write error) or ProtocolError (bad frame)."""
        sock = self.proc.sock
        while True:
            events = select.POLLIN | (select.POLLOUT if self.unsent else 0)
            revents = wait_fd(sock.fileno(), events, deadline)
            if not revents:
                raise TimeoutError("no reply before the deadline")
            if self.unsent and revents & select.POLLOUT:
                try:
                    n = sock.send(self.unsent, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
                    self.unsent = self.unsent[n:]
                except (BlockingIOError, InterruptedError):
                    pass
                except (BrokenPipeError, ConnectionResetError) as exc:
                    raise PeerClosed(str(exc)) from None
            if revents & (select.POLLIN | select.POLLHUP | select.POLLERR):
                for frame in self.proc.reader.pump():
                    if self.sent and frame.get("op") == "done" and frame.get("id") == self.rid:
                        return frame
                    self.stray += 1
                    if self.stray == 1:
                        log.info(
                            "session %s: dropped a frame that is not the reply to the current request (%.40r)",
                            self.proc.session_pid,
                            frame.get("op"),
                        )


class Session:
    """A persistent IPython session. `run` is blocking and thread-safe (calls on one session are serialized)."""

    def __init__(self, pool: SessionPool, proc: _Proc):
        self._pool = pool
        self._proc: _Proc | None = proc
        self._lock = threading.Lock()
        self._closed = False
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
        """Run one cell; `timeout` (seconds) overrides the pool's default for this call only.

        Returns by `timeout + interrupt_grace`; a cell still running `interrupt_grace - KILL_MARGIN` seconds
        after its SIGINT is killed (state lost) and the next call starts a fresh process. Raises
        SessionClosedError when the session is or gets closed."""
        if not isinstance(code, str):
            raise TypeError(f"code must be str, not {type(code).__name__}")
        limit = self._pool.timeout if timeout is None else check_timeout(timeout, "timeout")
        rid = secrets.token_hex(16)  # unguessable: a frame written before this request cannot carry it
        try:
            frame = encode({"op": "run", "id": rid, "code": code}, MAX_REQUEST_BYTES)
        except ProtocolError:
            raise ValueError(f"code is too large (the limit is {MAX_REQUEST_BYTES >> 20} MiB)") from None
        with self._lock:
            try:
                if self._closed:
                    raise SessionClosedError("session is closed")
                if self._proc is None:  # killed by the previous call, or an earlier restart failed: fork now
                    self._adopt(self._pool._spawn(time.monotonic() + self._pool.ready_timeout))
                assert self._proc is not None
                return self._run_locked(self._proc, rid, frame, limit)
            finally:
                if self._closed:
                    self._dispose()

    async def arun(self, code: str, timeout: float | None = None) -> ExecResult:
        """`await session.arun(code)`: `run` on the pool's thread pool, so the event loop never blocks."""
        if timeout is not None:
            check_timeout(timeout, "timeout")
        if self._closed or self._pool.closed:
            raise SessionClosedError("session is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool._executor(), functools.partial(self.run, code, timeout))

    def _run_locked(self, proc: _Proc, rid: str, frame: bytes, limit: float) -> ExecResult:
        start = time.monotonic()
        hard_deadline = start + limit + self._pool.interrupt_grace
        call = _Call(proc, rid, frame)
        try:
            return self._finish(call.wait(start + limit), time.monotonic() - start)
        except TimeoutError:
            pass
        except (PeerClosed, OSError) as exc:
            return self._crashed(proc, start, hard_deadline, None, exc)
        except ProtocolError as exc:
            return self._crashed(proc, start, hard_deadline, str(exc), exc)

        # Timed out (or the session did not even take the code): interrupt, which keeps the state ...
        proc.signal(signal.SIGINT)
        kill_at = max(start + limit, hard_deadline - KILL_MARGIN)
        try:
            reply: dict[str, Any] | None = call.wait(kill_at)
        except (TimeoutError, PeerClosed, OSError, ProtocolError):
            reply = None
        seconds = time.monotonic() - start
        if reply is not None:
            if not reply.get("interrupted"):
                return self._finish(reply, seconds)  # it finished on its own just as the limit passed
            return ExecResult(texts.timeout_kept(self._cell_text(reply), limit), "timeout", False, seconds)
        # ... or, when the cell does not stop or the session does not read its channel, kill the session and
        # return by `hard_deadline`; the fresh process is forked by the next call (this one has used its time).
        if not call.sent:
            log.warning("session %s did not read its channel for %.1f s: killed", proc.session_pid, seconds)
        self._check_not_closed()
        self._restart(proc, hard_deadline, kill=True, respawn=False)
        return ExecResult(texts.timeout_lost(limit), "timeout", True, seconds)

    def _cell_text(self, reply: dict[str, Any]) -> str:
        """The cell's own output from an untrusted reply: a valid string, cut to the limit with the marker."""
        limit = self._pool.max_output_chars
        output = reply.get("output")
        output = output if isinstance(output, str) else ""
        output = output.encode("utf-8", "replace").decode("utf-8")
        cut = reply.get("cut") is True or len(output) > limit
        return texts.cell_text(output[:limit], cut)

    def _finish(self, reply: dict[str, Any], seconds: float) -> ExecResult:
        status: Literal["ok", "error"] = "ok" if reply.get("status") == "ok" else "error"
        text = reply.get("interrupt_text")
        if reply.get("interrupted") and isinstance(text, str) and isinstance(reply.get("output"), str):
            # We sent no interrupt: the cell's own SIGINT, a KeyboardInterrupt like any other error.
            text = text or "KeyboardInterrupt"
            reply = {**reply, "output": reply["output"] + text + ("" if text.endswith("\n") else "\n")}
        return ExecResult(self._cell_text(reply), status, False, seconds)

    def _crashed(
        self, proc: _Proc, start: float, deadline: float, protocol_error: str | None, exc: BaseException
    ) -> ExecResult:
        seconds = time.monotonic() - start
        self._check_not_closed()
        # EOF: the process is ending (give it a moment, so that its exit status is the real cause), or a cell
        # closed the channel and goes on running, which leaves the session unusable.
        if protocol_error is None and not proc.wait_exit(min(deadline, time.monotonic() + EXIT_WAIT)):
            protocol_error = "the session closed its channel"
        status = self._restart(proc, deadline, kill=protocol_error is not None)
        reason = texts.crash_reason(status, protocol_error=protocol_error)
        return ExecResult(texts.crashed(reason), "crashed", True, seconds)

    def _check_not_closed(self) -> None:
        if self._closed:
            raise SessionClosedError("session was closed while the cell was running")

    def _restart(self, proc: _Proc, deadline: float, *, kill: bool, respawn: bool = True) -> dict[str, Any] | None:
        """Retire `proc` and, with `respawn`, fork a fresh session if that can be done by `deadline` (else the
        next run forks one). Returns how `proc` ended, when the template tells in time."""
        self._proc = None
        self.restarts += 1
        if kill:
            self._pool._kill_proc(proc)
            # Gone in milliseconds, normally within KILL_MARGIN of a hard kill. On a heavily loaded machine the
            # killed process may need longer to be scheduled and die: a hard kill does not wait past its bound
            # for that (the process is SIGKILLed, its CPU time is over; the template reaps it).
            proc.wait_exit(time.monotonic() + EXIT_WAIT if respawn else deadline)
        status = self._pool._release_proc(proc, status_deadline=None if kill else deadline)
        if respawn and time.monotonic() < deadline:
            try:
                self._adopt(self._pool._spawn(deadline))
            except SessionClosedError:
                raise
            except Exception as exc:  # noqa: BLE001 - the next run() forks again and raises if it still fails
                log.info("restarting the session after its process ended failed (%s); the next run retries", exc)
        return status

    def _adopt(self, proc: _Proc) -> None:
        """Make `proc` this session's process, unless the session was closed meanwhile (then end it)."""
        with self._pool._lock:
            if not self._closed:
                self._proc = proc
                return
        self._pool._kill_proc(proc)
        self._pool._release_proc(proc)
        raise SessionClosedError("session was closed while it was being restarted")

    def _dispose(self, release_wait: float | None = None) -> None:
        """End the current process and free its descriptors (caller holds `_lock`); with `release_wait`, wait
        that long at most for the template to have removed its files."""
        proc, self._proc = self._proc, None
        if proc is not None:
            self._pool._kill_proc(proc)
            deadline = None if release_wait is None else time.monotonic() + release_wait
            self._pool._release_proc(proc, status_deadline=deadline)

    # ----------------------------------------------------------------------------------------- close
    def close(self) -> None:
        """Kill the session process, remove its working directory, free its pool slot. Idempotent.

        A `run` in progress in another thread raises SessionClosedError (at once: its process is killed)."""
        with self._pool._lock:
            if self._closed:
                return
            self._closed = True
        self._pool._kill_proc(self._proc)
        self._pool._forget(self)
        # The thread running a cell (if any) holds the lock; it sees the kill at once and disposes itself.
        if self._lock.acquire(timeout=CLOSE_WAIT):
            try:
                self._dispose(release_wait=CLOSE_WAIT)
            finally:
                self._lock.release()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
