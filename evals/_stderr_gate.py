"""A gate on file descriptor 2 that can be closed at Ctrl-C, for the engine's processes too.

A Ctrl-C at the terminal reaches every process of the foreground group: vLLM's engine processes (which share our
stderr) stop on it themselves and, when they were busy, print tracebacks after our one line. They are not ours to
change, so while the gate is open fd 2 is a pipe that a thread copies to the real stderr, holding each chunk back
a moment; closing the gate (from a SIGINT handler, before anything else runs) drops what is held and all that
follows. Our own messages go straight to the real stderr.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import deque
from typing import Any

__all__ = ["StderrGate"]

HOLD_SECONDS = 0.5
"""How long engine output waits before it is shown: the time a busy engine needs to report a Ctrl-C is longer."""


class StderrGate:
    """Route fd 2 through a pipe (`open`); `close_gate()` silences it for good. One per process."""

    def __init__(self) -> None:
        self._real = -1
        self._closed = threading.Event()
        self._held: deque[tuple[float, bytes]] = deque()
        self._lock = threading.Lock()
        self._previous_handler: Any = None

    def open(self) -> None:
        sys.stderr.flush()
        self._real = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        sys.stderr = open(self._real, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
        threading.Thread(target=self._pump, args=(read_end,), name="stderr-gate", daemon=True).start()
        threading.Thread(target=self._release, name="stderr-gate-release", daemon=True).start()
        self._previous_handler = signal.getsignal(signal.SIGINT)
        if callable(self._previous_handler):
            signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.close_gate()
        self._previous_handler(signum, frame)  # Python's default: KeyboardInterrupt

    def close_gate(self) -> None:
        """Drop everything written to fd 2 from now on (and what is still held back)."""
        self._closed.set()
        with self._lock:
            self._held.clear()

    def flush(self) -> None:
        """Write out what is held back (at a normal end)."""
        with self._lock:
            while self._held and not self._closed.is_set():
                try:
                    os.write(self._real, self._held.popleft()[1])
                except OSError:
                    break

    def _pump(self, read_end: int) -> None:
        while True:
            try:
                chunk = os.read(read_end, 65536)
            except OSError:
                return
            if not chunk:
                return
            if not self._closed.is_set():
                with self._lock:
                    self._held.append((time.monotonic(), chunk))

    def _release(self) -> None:
        while not self._closed.is_set():
            now = time.monotonic()
            with self._lock:
                while self._held and now - self._held[0][0] >= HOLD_SECONDS and not self._closed.is_set():
                    _t, chunk = self._held.popleft()
                    try:
                        os.write(self._real, chunk)
                    except OSError:
                        return
            time.sleep(0.05)
