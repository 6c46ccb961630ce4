"""Bounded capture of everything a cell prints, inside the session process.

One BoundedWriter per session serves as both sys.stdout and sys.stderr, so prints, warnings, the echoed last
expression and tracebacks land in one buffer in the order they happened. It keeps at most a fixed number of
characters and only counts the rest, so an endless print costs time, never memory. File-descriptor level output
(C libraries, subprocesses, os.write(1, ...)) goes through a pipe that FdCapture drains into the same writer.
"""
from __future__ import annotations

import codecs
import io
import os
import re
import signal
import threading

# CSI sequences (colours, cursor moves), OSC sequences (titles, hyperlinks), and lone two-byte escapes.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def clean_text(text: str) -> str:
    """What the model may read: no ANSI escapes, \\n line ends, valid UTF-8 (lone surrogates replaced)."""
    text = strip_ansi(text).replace("\r\n", "\n")
    return text.encode("utf-8", "replace").decode("utf-8")


class _BinaryView(io.RawIOBase):
    """sys.stdout.buffer: bytes written here are decoded as UTF-8 into the text writer."""

    def __init__(self, owner: "BoundedWriter"):
        self._owner = owner
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        self._owner.write(self._decoder.decode(bytes(b)))
        return len(b)

    def close(self) -> None:  # a cell must not be able to break capture for later cells
        pass


class BoundedWriter(io.TextIOBase):
    """A text stream that keeps the first `limit` characters written while a cell runs.

    `close()` is a no-op: `sys.stdout.close()` in a cell must not break later cells. Writes outside a cell are
    dropped (e.g. from a thread left running), and in a process forked by a cell writes go to its fd 1, where
    the session's FdCapture picks them up.
    """

    def __init__(self, limit: int, fd_capture: "FdCapture | None" = None):
        super().__init__()
        self.limit = limit
        self.keep = limit + 256  # slack so that escape sequences stripped at the end do not eat the budget
        self.fd_capture = fd_capture
        self._parts: list[str] = []
        self._size = 0
        self._overflow = False
        self._active = False
        self._forked = False
        self._lock = threading.Lock()
        self._buffer = _BinaryView(self)

    # --- io.TextIOBase surface that libraries probe
    encoding = "utf-8"
    errors = "replace"
    name = "<cell output>"

    @property
    def buffer(self):  # type: ignore[override]
        return self._buffer

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        # fd 1 is the capture pipe: `subprocess.run(..., stdout=sys.stdout)` and faulthandler land in the output
        return 1

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    @property
    def closed(self) -> bool:  # type: ignore[override]
        return False

    # --- capture
    def write(self, s) -> int:  # type: ignore[override]
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if self._forked:
            try:
                os.write(1, s.encode("utf-8", "replace"))
            except OSError:
                pass
            return len(s)
        if self.fd_capture is not None:
            self.fd_capture.drain()  # keeps the order with output of subprocesses
        self._append(s)
        return len(s)

    def _append(self, s: str) -> None:
        with self._lock:
            if not self._active or not s:
                return
            room = self.keep - self._size
            if room <= 0:
                self._overflow = True
                return
            if len(s) > room:
                s = s[:room]
                self._overflow = True
            self._parts.append(s)
            self._size += len(s)

    def begin(self) -> None:
        with self._lock:
            self._parts, self._size, self._overflow, self._active = [], 0, False, True

    def end(self) -> tuple[str, bool]:
        """Stop capturing; returns (clean text of at most `limit` chars, whether anything was cut)."""
        if self.fd_capture is not None:
            self.fd_capture.drain()
        with self._lock:
            self._active = False
            text, overflow = "".join(self._parts), self._overflow
            self._parts, self._size = [], 0
        text = clean_text(text)
        if len(text) > self.limit:
            return text[: self.limit], True
        return text, overflow

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._forked = True


class FdCapture:
    """Routes fds 1 and 2 into a pipe and feeds what arrives there into a BoundedWriter.

    A daemon thread drains the pipe so a subprocess never blocks on a full pipe; the writer also drains it before
    each Python-level write so output of `os.system("echo b")` between two prints keeps its place. Both read
    only under one lock and non-blocking, so no byte is read twice or reordered.
    """

    def __init__(self) -> None:
        self.writer: BoundedWriter | None = None
        r, w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(r, False)
        self._r = r
        os.dup2(w, 1)  # dup2 clears O_CLOEXEC on the new fds: subprocesses inherit them
        os.dup2(w, 2)
        os.close(w)
        self._lock = threading.Lock()
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._thread = threading.Thread(target=self._pump, name="tool_runtime-fd-capture", daemon=True)
        self._in_child = False

    def start(self) -> None:
        self._thread.start()

    def drain(self) -> None:
        if self._in_child:
            return
        with self._lock:
            self._read_available()

    def _read_available(self) -> bool:
        """Move everything readable now into the writer; False once every write end is closed."""
        while True:
            try:
                data = os.read(self._r, 65536)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                return False
            if self.writer is not None:
                self.writer._append(self._decoder.decode(data))

    def _pump(self) -> None:
        # Process-directed SIGINT must reach the main thread (it interrupts the cell), never this one.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        import select
        poller = select.poll()
        poller.register(self._r, select.POLLIN)
        alive = True
        while alive:
            poller.poll()
            with self._lock:
                alive = self._read_available()

    def before_fork(self) -> None:
        self._lock.acquire()

    def after_fork_in_parent(self) -> None:
        self._lock.release()

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._in_child = True


class NoStdin(io.TextIOBase):
    """sys.stdin of a session: any read fails at once with a clear error instead of hanging."""

    MESSAGE = "input() was called, but this session has no stdin: input requests are not supported."

    def readable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def _fail(self, *args, **kwargs):
        __tracebackhide__ = True  # noqa: F841 - IPython leaves this frame out of the traceback
        from IPython.core.error import StdinNotImplementedError
        raise StdinNotImplementedError(self.MESSAGE)

    read = readline = readlines = _fail

    def fileno(self) -> int:
        raise io.UnsupportedOperation("the session has no stdin")

    def close(self) -> None:
        pass
