"""Parent-side handle of the template process: start it as a fresh interpreter and speak its control protocol.

The template is started from a dedicated keeper thread that lives exactly as long as the template (it waits for
and reaps it). That matters because the kernel's parent-death signal fires when the *thread* that forked a
child exits: started from a short-lived worker thread of the user's program, the template would be killed when
that thread ends. The environment passed is built from scratch: no variable of the user's process (API keys,
tokens, proxies) reaches the template or the sessions.
"""
from __future__ import annotations

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

CTL_MAX_BYTES = 1 << 20
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS")


class TemplateError(RuntimeError):
    """The template process failed to start or died."""


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
        "PYTHONPATH": package_parent,       # removed again by the template once it has started
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        "MPLBACKEND": "Agg",
        "IPYTHONDIR": os.path.join(cfg.workdir_root, ".ipython"),
    }
    env.update({name: "1" for name in THREAD_VARS})
    env.update(cfg.extra_env)
    return env


class TemplateHandle:
    """One running template. `request` is thread-safe (one request at a time on the control socket)."""

    def __init__(self, cfg: RuntimeConfig, *, python: str, start_timeout: float):
        self.cfg = cfg
        self.python = python
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._dead = False
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
                        pass_fds=[theirs.fileno()], env=clean_env(self.cfg), cwd=self.cfg.workdir_root,
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                        start_new_session=True)
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

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return Path(self._log_path).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # ----------------------------------------------------------------------------------------- protocol
    def _send(self, obj: dict[str, Any]) -> None:
        assert self._sock is not None
        self._sock.sendall(encode(obj, CTL_MAX_BYTES))

    def _recv(self, deadline: float) -> tuple[dict[str, Any], list[int]]:
        """One reply frame and any file descriptors sent with it (SCM_RIGHTS)."""
        assert self._sock is not None
        buf = bytearray()
        fds: list[int] = []
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        try:
            while True:
                if len(buf) >= HEADER.size:
                    (length,) = HEADER.unpack_from(buf)
                    if length > CTL_MAX_BYTES:
                        raise ProtocolError("oversized control frame")
                    if len(buf) >= HEADER.size + length:
                        return decode(bytes(buf[HEADER.size:HEADER.size + length])), fds
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not poller.poll(remaining * 1000 + 1):
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

    def request(self, obj: dict[str, Any], timeout: float = 30.0) -> tuple[dict[str, Any], list[int]]:
        with self._lock:
            if self._dead or self._sock is None:
                raise TemplateError("the template process is not running")
            try:
                self._send(obj)
                reply, fds = self._recv(time.monotonic() + timeout)
            except (TimeoutError, PeerClosed, ProtocolError, OSError) as exc:
                self._dead = True
                raise TemplateError(f"lost the template process: {exc}") from None
        if reply.get("op") == "error":
            for fd in fds:
                os.close(fd)
            raise TemplateError(f"template: {reply.get('error')}")
        return reply, fds

    @property
    def alive(self) -> bool:
        return not self._dead and self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    # ----------------------------------------------------------------------------------------- stop
    def shutdown(self, timeout: float = 10.0) -> None:
        """Ask the template to kill and reap every session and clean up; kill it if it does not comply."""
        if self.proc is None:
            return
        if not self._dead and self.proc.poll() is None:
            try:
                self.request({"op": "shutdown"}, timeout=timeout)
            except TemplateError:
                pass
        self._dead = True
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._close_socket()

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
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass

    def forget_after_fork(self) -> None:
        """In a child of the user's process: drop our copy of the socket, never talk to the template."""
        self._dead = True
        self._close_socket()
