"""Parent-side handle of the template process: start it as a fresh interpreter and speak its control protocol.

The template is started from a dedicated keeper thread that lives exactly as long as the template (it waits for
and reaps it). That matters because the kernel's parent-death signal fires when the *thread* that forked a
child exits: started from a short-lived worker thread of the user's program, the template would be killed when
that thread ends. The environment passed is built from scratch: no variable of the user's process (API keys,
tokens, proxies) reaches the template or the sessions.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .config import RuntimeConfig
from .protocol import HEADER, PeerClosed, ProtocolError, decode, encode
from .timeouts import wait_fd

log = logging.getLogger(__name__)

CTL_MAX_BYTES = 1 << 20
CTL_SEND_TIMEOUT = 5.0  # writing one small control frame; only a template that stopped reading takes longer
THREAD_VARS = (
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "BLIS_NUM_THREADS",
)


class TemplateError(RuntimeError):
    """The template process failed to start or died."""


class TemplateBusyError(TemplateError):
    """The template is alive but did not answer in time (e.g. still cleaning up); nothing was lost."""


class _Pending:
    """One control request waiting for its reply (matched by the `req` number the template echoes)."""

    def __init__(self, op: str, req: int, abandoned: bool = False):
        self.op = op
        self.req = req
        self.done = threading.Event()
        self.reply: dict[str, Any] | None = None
        self.fds: list[int] = []
        self.error: str | None = None
        self.abandoned = abandoned  # nobody waits: the reader disposes of the reply (and of any fds in it)


def clean_env(cfg: RuntimeConfig) -> dict[str, str]:
    """The whole environment of the template (and so of every session); nothing is inherited."""
    package_parent = str(Path(__file__).resolve().parent.parent)
    bindir = os.path.dirname(sys.executable)
    env = {
        "PATH": f"{bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": cfg.workdir_root,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "PYTHONPATH": package_parent,  # removed again by the template once it has started
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        "MPLBACKEND": "Agg",
        "IPYTHONDIR": os.path.join(cfg.workdir_root, ".ipython"),
    }
    env.update({name: "1" for name in THREAD_VARS})
    env.update(cfg.extra_env)
    return env


class TemplateHandle:
    """One running template. Requests are thread-safe and pipelined: each carries a number that the template
    echoes, a reader thread hands every reply to its waiter, and no request waits behind another one here."""

    def __init__(self, cfg: RuntimeConfig, *, python: str, start_timeout: float):
        self.cfg = cfg
        self.python = python
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()  # pending requests and request numbers
        self._send_lock = threading.Lock()  # writing on the control socket (taken before _lock, never after)
        self._pending: dict[int, _Pending] = {}
        self._req = 0
        self._reader: threading.Thread | None = None
        self._dead = False  # shut down or killed by us
        self._eof = False  # the control socket is closed (the template died or was stopped)
        self._log_path = os.path.join(cfg.workdir_root, "template.log")

    # ----------------------------------------------------------------------------------------- start
    def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        started = threading.Event()
        box: dict[str, Any] = {}

        def keeper() -> None:
            try:
                with open(self._log_path, "ab") as log:
                    box["proc"] = subprocess.Popen(
                        [self.python, "-s", "-m", "tool_runtime.template", str(theirs.fileno()), str(os.getpid())],
                        pass_fds=[theirs.fileno()],
                        env=clean_env(self.cfg),
                        cwd=self.cfg.workdir_root,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                        start_new_session=True,
                    )
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                box["error"] = exc
                started.set()
                return
            started.set()
            box["proc"].wait()  # lives as long as the template, and reaps it

        thread = threading.Thread(target=keeper, name="tool_runtime-template-keeper", daemon=True)
        thread.start()
        started.wait()
        theirs.close()
        if "error" in box:
            ours.close()
            raise TemplateError(f"could not start the template process: {box['error']}")
        self.proc = box["proc"]
        self._sock = ours
        try:
            self._send(self.cfg.to_dict())
            reply, _ = self._recv(time.monotonic() + self.start_timeout)
        except (TimeoutError, PeerClosed, ProtocolError, OSError) as exc:
            self.kill()
            raise TemplateError(f"the template process did not start ({exc}); log:\n{self.log_tail()}") from None
        if reply.get("op") != "ready":
            self.kill()
            raise TemplateError(f"the template process failed: {reply.get('error')}; log:\n{self.log_tail()}")
        self.info = reply["info"]
        self._reader = threading.Thread(target=self._read_replies, name="tool_runtime-template-reader", daemon=True)
        self._reader.start()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return Path(self._log_path).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # ----------------------------------------------------------------------------------------- protocol
    def _send(self, obj: dict[str, Any], deadline: float | None = None) -> None:
        """Write one control frame; bounded by `deadline` (a template that stops reading is busy, not dead)."""
        assert self._sock is not None
        data = memoryview(encode(obj, CTL_MAX_BYTES))
        if deadline is None:
            self._sock.sendall(data)
            return
        while data:
            if not wait_fd(self._sock.fileno(), select.POLLOUT, deadline):
                raise TemplateBusyError("the template does not read its control socket")
            try:
                data = data[self._sock.send(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL) :]
            except (BlockingIOError, InterruptedError):
                continue

    def _recv(self, deadline: float) -> tuple[dict[str, Any], list[int]]:
        """One reply frame and any file descriptors sent with it (SCM_RIGHTS); used only during start()."""
        assert self._sock is not None
        buf = bytearray()
        fds: list[int] = []
        try:
            while True:
                if len(buf) >= HEADER.size:
                    (length,) = HEADER.unpack_from(buf)
                    if length > CTL_MAX_BYTES:
                        raise ProtocolError("oversized control frame")
                    if len(buf) >= HEADER.size + length:
                        return decode(bytes(buf[HEADER.size : HEADER.size + length])), fds
                if not wait_fd(self._sock.fileno(), select.POLLIN, deadline):
                    raise TimeoutError("the template did not answer in time")
                data, new_fds, _, _ = socket.recv_fds(self._sock, 65536, 8)
                for fd in new_fds:  # received descriptors are inheritable; no subprocess of ours may get them
                    os.set_inheritable(fd, False)
                fds.extend(new_fds)
                if not data:
                    raise PeerClosed("template closed its control socket")
                buf += data
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise

    def _read_replies(self) -> None:
        """Reader thread: hands each reply to the request that is waiting for it, until the socket closes.

        Requests are pipelined: a slow request (a release whose clean-up takes long) never holds a lock that
        another request needs. Only EOF or a broken frame, i.e. a dead template, ends this loop."""
        sock = self._sock
        assert sock is not None
        buf = bytearray()
        fd_queue: list[int] = []  # descriptors in arrival order; only "forked" replies carry them (two each)
        reason = "template closed its control socket"
        try:
            while True:
                while len(buf) >= HEADER.size:
                    (length,) = HEADER.unpack_from(buf)
                    if length > CTL_MAX_BYTES:
                        raise ProtocolError("oversized control frame")
                    if len(buf) < HEADER.size + length:
                        break
                    reply = decode(bytes(buf[HEADER.size : HEADER.size + length]))
                    del buf[: HEADER.size + length]
                    fds: list[int] = []
                    if reply.get("op") == "forked":
                        fds, fd_queue = fd_queue[:2], fd_queue[2:]
                    self._deliver(reply, fds)
                data, new_fds, _, _ = socket.recv_fds(sock, 65536, 8)
                for fd in new_fds:
                    os.set_inheritable(fd, False)
                fd_queue.extend(new_fds)
                if not data:
                    break
                buf += data
        except (OSError, ProtocolError) as exc:
            reason = f"lost the template's control socket: {exc}"
        finally:
            for fd in fd_queue:
                os.close(fd)
            self._fail_all(reason)

    def _deliver(self, reply: dict[str, Any], fds: list[int]) -> None:
        with self._lock:
            req = reply.get("req")
            if reply.get("op") == "bye":  # the template's last word answers the shutdown request (it has no number)
                req = next((r for r, p in self._pending.items() if p.op == "shutdown"), None)
            pending = self._pending.pop(req, None)  # type: ignore[arg-type]
            if pending is not None and not pending.abandoned:
                pending.reply, pending.fds = reply, fds
                pending.done.set()
                return
        for fd in fds:
            os.close(fd)
        if pending is not None and reply.get("op") == "forked" and isinstance(reply.get("pid"), int):
            self.release_nowait(reply["pid"])  # forked for a caller that gave up: end it, or it holds a slot

    def _fail_all(self, reason: str) -> None:
        with self._send_lock, self._lock:  # nobody is writing on the socket while it is closed
            self._eof = True
            pending, self._pending = list(self._pending.values()), {}
            if self._sock is not None:
                try:
                    self._sock.close()
                except OSError:
                    pass
        for p in pending:
            p.error = reason
            p.done.set()

    def submit(self, obj: dict[str, Any], *, abandoned: bool = False) -> _Pending:
        """Send a request without waiting for its reply (`abandoned`: nobody will ever wait for it)."""
        with self._lock:
            if self._eof or self._sock is None or not self.alive:
                raise TemplateError("the template process is not running")
            self._req += 1
            pending = _Pending(str(obj.get("op")), self._req, abandoned)
            self._pending[pending.req] = pending
        try:
            with self._send_lock:
                if self._eof:
                    raise TemplateError("the template process is not running")
                self._send({**obj, "req": pending.req}, time.monotonic() + CTL_SEND_TIMEOUT)
        except BaseException:
            with self._lock:
                self._pending.pop(pending.req, None)
            raise
        return pending

    def wait(self, pending: _Pending, deadline: float) -> tuple[dict[str, Any], list[int]]:
        """The reply to `pending` (and its fds, now the caller's). TemplateBusyError at the deadline: the request is
        then abandoned (a late fork is released by the reader), the template is not considered dead."""
        remaining = deadline - time.monotonic()
        while not pending.done.wait(max(0.0, min(remaining, 3600.0))):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
        with self._lock:
            if not pending.done.is_set():
                pending.abandoned = True
                raise TemplateBusyError(
                    f"the template did not answer a {pending.op!r} request in time "
                    "(it is busy, e.g. cleaning up after a session)"
                )
        if pending.error is not None:
            raise TemplateError(pending.error)
        assert pending.reply is not None
        reply, fds = pending.reply, pending.fds
        if reply.get("op") == "error":
            for fd in fds:
                os.close(fd)
            raise TemplateError(f"template: {reply.get('error')}")
        return reply, fds

    def request(self, obj: dict[str, Any], timeout: float = 30.0) -> tuple[dict[str, Any], list[int]]:
        """Send a request and wait up to `timeout` s for its reply; thread-safe, requests do not queue here."""
        return self.wait(self.submit(obj), time.monotonic() + timeout)

    def release_nowait(self, pid: int) -> None:
        """Ask the template to reap session `pid` and remove its files, without waiting for it."""
        try:
            self.submit({"op": "release", "pid": pid}, abandoned=True)
        except TemplateError:
            pass  # the template is gone: its sessions died with it, and its successor cleans up the directory

    @property
    def alive(self) -> bool:
        """Judged by the process and its socket, never by how long a request takes."""
        return not self._dead and not self._eof and self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    # ----------------------------------------------------------------------------------------- stop
    def shutdown(self, timeout: float = 10.0) -> None:
        """Ask the template to kill and reap every session and clean up; kill it if it is not done by `timeout`
        or if the clean-up failed (its sessions die with it: they have a parent-death signal)."""
        if self.proc is None:
            return
        deadline = time.monotonic() + timeout
        orderly = False
        if self.alive:
            try:
                self.wait(self.submit({"op": "shutdown"}), deadline)
                orderly = True
            except TemplateError as exc:
                log.warning("template %s did not shut down in an orderly way (killed): %s", self.pid, exc)
        self._dead = True
        if orderly:
            try:
                self.proc.wait(timeout=max(0.5, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("template %s did not exit after shutting down: killed", self.pid)
        self.kill()

    def kill(self) -> None:
        self._dead = True
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._close_socket()

    def _close_socket(self) -> None:
        """Wake the reader thread, which closes the socket (closing it under a blocked recv would not wake it,
        and its fd number could be reused by the time recv returns)."""
        with self._send_lock, self._lock:
            sock = self._sock
            if sock is None or self._eof:
                return
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            if self._reader is None:  # never started (failed start): nobody else will close it
                self._eof = True
                sock.close()

    def forget_after_fork(self) -> None:
        """In a child of the user's process: drop our copy of the socket, never talk to the template.
        (Threads do not survive fork: there is no reader here, and its lock may be held by a dead thread.)"""
        self._dead = True
        self._eof = True
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
