"""SessionPool: owns the template process, bounds the number of live sessions, cleans everything up.

    with SessionPool(max_sessions=256, timeout=10.0, max_output_chars=1000) as pool:
        session = pool.open()
        session.run("x = 21 * 2\\nx").output   # "42\\n"

`open` and `Session.run` are thread-safe. If the template dies (it never runs model code, but the OOM killer
may pick it), the next `open` starts a new one; sessions of the old one are gone and report state_lost.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable
from types import EllipsisType
from typing import Any

from .cleanup import remove_tree
from .config import RuntimeConfig
from .launcher import TemplateError, TemplateHandle
from .protocol import PeerClosed, ProtocolError
from .session import Session, SessionClosedError, _Proc
from .timeouts import check_timeout

__all__ = ["SessionPool", "PoolExhaustedError", "TemplateError"]

log = logging.getLogger(__name__)

SHUTDOWN_WAIT = 5.0  # close(): seconds the template gets to end its sessions and clean up before it is killed
REMOVE_WAIT = 2.0  # close(): seconds to wait for the pool's directory to be removed (then it goes on alone)
_DEFAULTS = RuntimeConfig()  # the sessions' knobs default to RuntimeConfig's values (one definition each)


class PoolExhaustedError(RuntimeError):
    """`open()` found no free slot within `open_timeout` seconds (max_sessions sessions are open)."""


_live_pools: weakref.WeakSet[SessionPool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A child of the user's process (e.g. a data-loader worker) must not hold or use the pool's sockets.
    for pool in list(_live_pools):
        pool._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _finalize(template: TemplateHandle, root: str) -> None:
    """Last-resort cleanup when a pool is garbage-collected or the interpreter exits without close()."""
    try:
        template.shutdown(timeout=5)
    finally:
        _remove_dir(root, wait=REMOVE_WAIT)


def _remove_dir(path: str, wait: float) -> None:
    """Remove the pool's directory without ever raising and without blocking for longer than `wait` s.

    What a cell left there is unbounded (100k directories take minutes; a 1500-deep tree makes a recursive
    delete raise RecursionError), so the directory is first renamed away (it is gone at once for everybody)
    and then removed by :func:`cleanup.remove_tree`, which goes on in the background past `wait`."""
    if not os.path.lexists(path):
        return
    trash = f"{path}.removing"
    try:
        os.rename(path, trash)
    except OSError:
        trash = path
    remove_tree(trash, timeout=wait)


class SessionPool:
    """Forked, persistent, isolated IPython sessions.

    max_sessions      live sessions at most; `open()` beyond that waits up to `open_timeout` seconds for a
                      slot, then raises PoolExhaustedError (open_timeout=0: raise at once; None: wait forever)
    timeout           default per-cell time limit in seconds (`run(code, timeout=...)` overrides it)
    max_output_chars  characters of cell output the model reads; more is cut with "<output cut>"
    interrupt_grace   seconds a timed-out cell gets to stop after SIGINT before its session is killed
    memory_limit      bytes of address space a session may add to the template's (RLIMIT_AS); also the limit
                      of its memory cgroup when one is available
    max_file_bytes    largest file a session may write (RLIMIT_FSIZE)
    max_open_files    RLIMIT_NOFILE
    tmp_bytes         size cap of a session's own tmpfs: its work dir (= HOME), /tmp, /var/tmp and /dev/shm
                      together (memory-backed; gone with the session; needs a mount namespace)
    tmp_inodes        files + directories in that tmpfs
    seccomp           load a syscall filter in every session (keyring, io_uring, namespaces, mount, ptrace, ...)
    native_reaper     True: PID 1 of each session's PID namespace is the small compiled reaper (reaper.c, built at
                      install); False, or where it was not built: a forked Python process, about 2 MiB more each
    max_processes     processes + threads per session (pids cgroup; RLIMIT_NPROC under a per-session uid)
    cpu_seconds       RLIMIT_CPU backstop per session process
    preload           modules imported once in the template and shared by all sessions
    network           False (default): sessions have no network (empty network namespace) where permitted
    cgroups           True: a pids and a memory cgroup per session where writable (moving a process into a
                      cgroup v1 costs 5-20 ms per session start; spares hide it)
    isolate_users     as root, run each session under its own unprivileged uid (uid_base + pid)
    uid_base          first uid of that range (default 2_000_000_000, above the usual subuid ranges)
    nice              niceness added to session processes
    spare_sessions    sessions the template keeps forked and set up ahead of time, so `open()` returns in about
                      a millisecond (0: fork on demand; each spare costs a few MiB)
    warmup            code run once in the template before forking (default: a numpy/sympy cell)
    workdir_root      where the pool's private directory is created (default: the system temp dir)
    extra_env         variables added to the sessions' minimal environment (nothing else is inherited)
    start_timeout     seconds the template may take to start (imports + warm-up)
    ready_timeout     seconds a new session may take to report ready
    python            interpreter for the template (default: sys.executable)
    """

    def __init__(
        self,
        max_sessions: int = 256,
        timeout: float = 10.0,
        max_output_chars: int = _DEFAULTS.max_output_chars,
        *,
        interrupt_grace: float = 0.5,
        open_timeout: float | None = 60.0,
        memory_limit: int = _DEFAULTS.memory_limit,
        max_file_bytes: int = _DEFAULTS.max_file_bytes,
        max_open_files: int = _DEFAULTS.max_open_files,
        tmp_bytes: int = _DEFAULTS.tmp_bytes,
        tmp_inodes: int = _DEFAULTS.tmp_inodes,
        seccomp: bool = _DEFAULTS.seccomp,
        native_reaper: bool = _DEFAULTS.native_reaper,
        max_processes: int = _DEFAULTS.max_processes,
        cpu_seconds: int = _DEFAULTS.cpu_seconds,
        preload: Iterable[str] = _DEFAULTS.preload,
        network: bool = _DEFAULTS.network,
        cgroups: bool = _DEFAULTS.cgroups,
        isolate_users: bool = _DEFAULTS.isolate_users,
        uid_base: int = _DEFAULTS.uid_base,
        nice: int = _DEFAULTS.nice,
        spare_sessions: int = _DEFAULTS.spare_sessions,
        warmup: str | None = None,
        workdir_root: str | None = None,
        extra_env: dict[str, str] | None = None,
        start_timeout: float = 120.0,
        ready_timeout: float = 30.0,
        python: str | None = None,
    ):
        if sys.platform != "linux":
            raise RuntimeError("tool_runtime needs Linux (namespaces, pidfds, prctl)")
        if max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")
        self.max_sessions = max_sessions
        self.timeout = check_timeout(timeout, "timeout")
        self.max_output_chars = int(max_output_chars)
        self.interrupt_grace = check_timeout(interrupt_grace, "interrupt_grace", zero_ok=True)
        self.open_timeout = None if open_timeout is None else check_timeout(open_timeout, "open_timeout", zero_ok=True)
        self.ready_timeout = check_timeout(ready_timeout, "ready_timeout")
        start_timeout = check_timeout(start_timeout, "start_timeout")
        self._root = tempfile.mkdtemp(prefix="tool_runtime-", dir=workdir_root)
        os.chmod(self._root, 0o711)  # sessions may enter their own dir below, but not list their neighbours
        kwargs: dict[str, Any] = dict(
            max_output_chars=self.max_output_chars,
            preload=tuple(preload),
            memory_limit=int(memory_limit),
            max_file_bytes=int(max_file_bytes),
            max_open_files=int(max_open_files),
            tmp_bytes=int(tmp_bytes),
            tmp_inodes=int(tmp_inodes),
            seccomp=bool(seccomp),
            native_reaper=bool(native_reaper),
            max_processes=int(max_processes),
            cpu_seconds=int(cpu_seconds),
            network=bool(network),
            cgroups=bool(cgroups),
            isolate_users=bool(isolate_users),
            uid_base=int(uid_base),
            nice=int(nice),
            spare_sessions=int(spare_sessions),
            workdir_root=self._root,
            extra_env=dict(extra_env or {}),
        )
        if warmup is not None:
            kwargs["warmup"] = warmup
        self.config = RuntimeConfig(**kwargs)
        self.config.validate()
        self._python = python or sys.executable
        self._start_timeout = start_timeout
        self._lock = threading.RLock()  # pool state: sessions, closed flag, template swaps
        self._slots = threading.BoundedSemaphore(max_sessions)
        self._sessions: set[Session] = set()
        self._closed = False
        self._template_restarts = 0
        self._pool_executor: concurrent.futures.ThreadPoolExecutor | None = None
        try:
            self._template = self._start_template()
        except BaseException:
            _remove_dir(self._root, wait=REMOVE_WAIT)
            raise
        self._finalizer = weakref.finalize(self, _finalize, self._template, self._root)
        _live_pools.add(self)

    # ----------------------------------------------------------------------------------------- template
    def _start_template(self) -> TemplateHandle:
        handle = TemplateHandle(self.config, python=self._python, start_timeout=self._start_timeout)
        handle.start()
        return handle

    def _ensure_template(self, failed: TemplateHandle) -> TemplateHandle:
        """Replace a dead template (once per death, whichever thread notices first)."""
        with self._lock:
            if self._closed:
                raise SessionClosedError("pool is closed")
            if self._template is failed:
                failed.kill()
                self._template = self._start_template()
                self._template_restarts += 1
                self._finalizer.detach()
                self._finalizer = weakref.finalize(self, _finalize, self._template, self._root)
            return self._template

    # ----------------------------------------------------------------------------------------- sessions
    def open(self, timeout: float | None | EllipsisType = ...) -> Session:
        """A new session forked from the warm template.

        When `max_sessions` sessions are open, waits for one to close: up to `timeout` seconds (default: the
        pool's `open_timeout`; None waits forever, 0 does not wait), then raises PoolExhaustedError.
        """
        wait = self.open_timeout if timeout is ... else timeout
        if wait is not None:
            wait = check_timeout(wait, "open(timeout=)", zero_ok=True)
        self._check_open()
        got = self._slots.acquire() if wait is None else self._slots.acquire(timeout=wait)
        if not got:
            raise PoolExhaustedError(
                f"all {self.max_sessions} sessions are in use (waited {wait} s); close sessions or raise max_sessions"
            )
        try:
            with self._lock:
                self._check_open()
            proc = self._spawn(time.monotonic() + self.ready_timeout)
        except BaseException:
            self._slots.release()
            raise
        with self._lock:
            if not self._closed:
                session = Session(self, proc)
                self._sessions.add(session)
                return session
        # The pool was closed while this session was being forked: end it and free everything it holds.
        self._kill_proc(proc)
        self._release_proc(proc)
        self._slots.release()
        raise SessionClosedError("pool is closed")

    def _spawn(self, deadline: float) -> _Proc:
        """Fork a session process from the template and wait until it reports ready, both by `deadline`.

        A template that does not answer in time is busy (TemplateBusyError), not dead: only a template whose
        process or control socket is gone is replaced."""
        for attempt in range(2):
            template = self._template
            try:
                reply, fds = template.wait(template.submit({"op": "fork"}), deadline)
            except TemplateError:
                if attempt == 1 or template.alive:
                    raise
                self._ensure_template(template)
                continue
            sock = socket.socket(fileno=fds[0])
            proc = _Proc(
                sock,
                fds[1],
                int(reply["pid"]),
                int(reply["uid"]),
                str(reply["workdir"]),
                self.max_output_chars,
                template,
            )
            try:
                ready = proc.reader.read(deadline)
            except (TimeoutError, PeerClosed, ProtocolError, OSError) as exc:
                self._kill_proc(proc)
                self._release_proc(proc)
                raise RuntimeError(f"session process did not start: {exc}") from None
            if ready.get("op") != "ready":
                self._kill_proc(proc)
                self._release_proc(proc)
                raise RuntimeError(f"session set-up failed: {ready.get('error', ready.get('op'))}")
            proc.facts = ready
            if ready.get("reaper") == "python" and template.info.get("isolation", {}).get("reaper") == "native":
                log.warning("a session's PID 1 fell back to the Python reaper (exec of the native one failed)")
            if ready.get("view"):  # the work dir is in the session's mount namespace: link it for the host
                try:
                    os.symlink(f"/proc/{int(ready['pid'])}/root{proc.workdir}", proc.workdir)
                except OSError:
                    pass  # the session is already gone (then run() restarts it) or the link exists
            return proc
        raise AssertionError("unreachable")

    def _kill_proc(self, proc: _Proc | None) -> None:
        if proc is None or proc.pidfd < 0:
            return
        proc.signal(signal.SIGKILL)
        if not proc.template.info.get("isolation", {}).get("pid_namespace"):
            try:  # no PID namespace: also whatever the session forked into its process group
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _release_proc(self, proc: _Proc, status_deadline: float | None = None) -> dict[str, Any] | None:
        """Have the template reap the (killed or dead) process and remove its files; close our descriptors.

        Without `status_deadline` this does not wait for the template (its clean-up may be slow); with it, it
        waits until then for how the process ended (None when not known by then)."""
        if proc.released:
            return None
        proc.released = True
        status = None
        try:
            if status_deadline is None:
                proc.template.release_nowait(proc.pid)
            else:
                reply, _ = proc.template.wait(proc.template.submit({"op": "release", "pid": proc.pid}), status_deadline)
                status = reply.get("status")
        except TemplateError as exc:
            log.debug("release of session %s: %s", proc.pid, exc)
        proc.close_fds()
        return status

    def _forget(self, session: Session) -> None:
        with self._lock:
            if session in self._sessions:
                self._sessions.discard(session)
                self._slots.release()

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._pool_executor is None:
                self._pool_executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self.max_sessions, thread_name_prefix="tool_runtime-arun"
                )
            return self._pool_executor

    # ----------------------------------------------------------------------------------------- facts
    @property
    def info(self) -> dict[str, Any]:
        """What isolation is in force, the template's pid, limits and counters."""
        with self._lock:
            t = self._template
            out = dict(t.info)
            out.update(
                template_pid=t.pid,
                template_alive=t.alive,
                template_restarts=self._template_restarts,
                workdir_root=self._root,
                live_sessions=len(self._sessions),
                max_sessions=self.max_sessions,
                timeout=self.timeout,
                interrupt_grace=self.interrupt_grace,
                max_output_chars=self.max_output_chars,
                open_timeout=self.open_timeout,
                closed=self._closed,
            )
            return out

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosedError("pool is closed")

    # ----------------------------------------------------------------------------------------- close
    def close(self) -> None:
        """Kill every session and the template, reap them, remove all working directories. Idempotent.

        Returns in bounded time (about SHUTDOWN_WAIT + REMOVE_WAIT s at worst) and never raises: a template
        still busy cleaning up is killed, and a directory tree that takes long to delete is removed in the
        background."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sessions = list(self._sessions)
            self._sessions.clear()
            for s in sessions:
                s._closed = True
        try:
            self._close(sessions)
        except Exception:  # close() must not fail; what is left dies with the template
            log.exception("error while closing the session pool")
        _live_pools.discard(self)

    def _close(self, sessions: list[Session]) -> None:
        for s in sessions:
            self._kill_proc(s._proc)
        for _ in sessions:  # wake threads waiting in open(); they see the pool closed
            self._slots.release()
        self._template.shutdown(timeout=SHUTDOWN_WAIT)  # kills and reaps the rest, removes cgroups and dirs
        deadline = time.monotonic() + 2.0
        for s in sessions:  # a run() in progress was woken by the kill and disposes of its process itself
            if s._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                try:
                    s._dispose()
                finally:
                    s._lock.release()
        if self._pool_executor is not None:
            self._pool_executor.shutdown(wait=False, cancel_futures=True)
        self._finalizer.detach()
        _remove_dir(self._root, wait=REMOVE_WAIT)
        _live_pools.discard(self)

    def _forget_after_fork(self) -> None:
        self._closed = True
        self._template.forget_after_fork()
        for s in list(self._sessions):
            s._closed = True
            if s._proc is not None:
                s._proc.released = True
                s._proc.close_fds()
        self._finalizer.detach()

    def __enter__(self) -> SessionPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SessionPool sessions={len(self._sessions)}/{self.max_sessions} closed={self._closed}>"
