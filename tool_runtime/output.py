"""Cell output capture: one bounded writer per session serves as both sys.stdout and sys.stderr, so prints, warnings,
the echoed last expression and tracebacks land in one buffer in the order they happened. It keeps at most a fixed
number of characters and drops the rest (noting only whether any of it was more than whitespace), so an endless
print costs time, never memory. File-descriptor level output (C libraries, subprocesses, os.write(1, ...)) goes
through a pipe that FdCapture moves into the same writer.

The writer is on the path of every print, so its write() is a few attribute checks and a list append, plus one
poll(0) for output of subprocesses while the cell's output is under its limit; once it is full (a print loop),
only flags change: a print costs about what it costs in a plain interpreter writing to a pipe.
"""

from __future__ import annotations

import _thread
import codecs
import io
import os
import re
import select
import signal
import threading

# Looked up once in the template: a session then does no codec-registry lookup of its own.
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")

# CSI sequences (colours, cursor moves), OSC sequences (titles, hyperlinks), and lone two-byte escapes.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text) if "\x1b" in text else text


def finish_text(text: str, complete: bool) -> str:
    """The cell's output as the seed's sandbox returned it: no ANSI escapes, no leading blank lines, trailing
    whitespace removed and one newline added (nothing at all for no output). `complete` is False when text
    was dropped after `text` (then its end is not the end of the output and is left as it is)."""
    text = strip_ansi(text).lstrip("\n")
    if complete:
        text = text.rstrip()
        return text + "\n" if text else ""
    return text


class _BinaryView(io.RawIOBase):
    """sys.stdout.buffer: bytes written here are decoded as UTF-8 into the text writer."""

    def __init__(self, owner: BoundedWriter):
        self._owner = owner
        self._decoder = _Utf8Decoder("replace")

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self._owner.write(self._decoder.decode(bytes(b)))
        return len(b)

    def close(self) -> None:  # a cell must not be able to break capture for later cells
        pass


class BoundedWriter(io.TextIOBase):
    """A text stream that keeps the first `keep` characters written while a cell runs.

    `close()` is a no-op: `sys.stdout.close()` in a cell must not break later cells. Writes outside a cell are
    dropped (e.g. from a thread left running), and in a process forked by a cell writes go to its fd 1, where
    the session's FdCapture picks them up. Leading newlines are not kept (the seed's sandbox dropped leading
    blank lines), so they do not use up the budget.
    """

    def __init__(self, limit: int, fd_capture: FdCapture | None = None):
        super().__init__()
        self.limit = limit
        self.keep = limit + 256  # slack so that escape sequences stripped at the end do not eat the budget
        self.fd_capture = fd_capture
        self._parts: list[str] = []
        self._room = 0  # characters that may still be kept; <= 0 once full
        self._overflow = False  # something was dropped
        self._dropped_text = False  # ... and it was more than whitespace
        self._active = False
        self._forked = False
        self._buffer = _BinaryView(self)

    # --- io.TextIOBase surface that libraries probe
    encoding = "utf-8"
    errors = "replace"
    name = "<cell output>"

    @property
    def buffer(self):
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
    def closed(self) -> bool:
        return False

    # --- capture
    def write(self, s) -> int:
        if s.__class__ is not str and not isinstance(s, str):
            raise TypeError(f"string argument expected, got '{type(s).__name__}'")
        if self._forked:
            try:
                os.write(1, s.encode("utf-8", "replace"))
            except OSError:
                pass
            return len(s)
        if self._room <= 0:  # full, or no cell runs: nothing more is kept, so there is no order to keep either
            if self._active and s:
                self._overflow = True
                if not self._dropped_text and not s.isspace():
                    self._dropped_text = True
            return len(s)
        capture = self.fd_capture
        if capture is not None and capture.pending():
            capture.drain()  # output of subprocesses keeps its place before this write
        if self._room >= len(s) and self._parts:
            self._parts.append(s)
            self._room -= len(s)
        else:
            self._append(s)
        return len(s)

    def _append(self, s: str) -> None:
        if not self._active or not s:
            return
        if not self._parts:
            s = s.lstrip("\n")
            if not s:
                return
        room = self._room
        if room <= 0:
            self._overflow = True
            if not self._dropped_text and not s.isspace():
                self._dropped_text = True
            return
        if len(s) > room:
            rest = s[room:]
            s = s[:room]
            self._overflow = True
            if not self._dropped_text and not rest.isspace():
                self._dropped_text = True
        self._parts.append(s)
        self._room = room - len(s)

    def _drop(self, text: bool) -> None:
        """Output was lost before it reached the writer: the cell's output is incomplete from here on."""
        if self._active:
            self._room = 0
            self._overflow = True
            self._dropped_text = self._dropped_text or text

    def at_line_start(self) -> bool:
        """Whether the output so far ends a line (or is empty), after output of subprocesses is taken in."""
        if self.fd_capture is not None:
            self.fd_capture.drain()
        return not self._parts or self._overflow or self._parts[-1].endswith("\n")

    def begin(self) -> None:
        if self.fd_capture is not None:
            self.fd_capture.discard()  # output of leftover threads or processes between cells is not this cell's
        self._parts, self._room, self._overflow, self._dropped_text = [], self.keep, False, False
        self._active = True

    def end(self) -> tuple[str, bool]:
        """Stop capturing; returns (finished text of at most `limit` chars, whether anything was cut)."""
        if self.fd_capture is not None:
            self.fd_capture.drain()
        self._active = False
        text, dropped = "".join(self._parts), self._overflow and self._dropped_text
        self._parts, self._room = [], 0
        text = finish_text(text, complete=not dropped)
        if len(text) > self.limit:
            return text[: self.limit], True
        return text, dropped

    def after_fork_in_child(self) -> None:
        self._forked = True


class FdCapture:
    """Routes fds 1 and 2 into a pipe and moves what arrives there into a BoundedWriter, in order.

    The cell's thread takes what is in the pipe before each Python-level write (`pending()` is one poll(0)),
    so the output of `os.system("echo b")` between two prints keeps its place. A background thread keeps the
    pipe from filling up while the cell waits for a subprocess: it only stashes the bytes (at most
    `stash_limit`; beyond that it notes that something was dropped) and never touches the writer; a thread
    that writes moves them into the writer, under the same lock, so nothing is reordered or decoded twice.
    """

    def __init__(self, stash_limit: int = 1 << 20) -> None:
        self.writer: BoundedWriter | None = None
        r, w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(r, False)
        self._r = r
        os.dup2(w, 1)  # dup2 clears O_CLOEXEC on the new fds: subprocesses inherit them
        os.dup2(w, 2)
        os.close(w)
        self._poll = select.poll()
        self._poll.register(r, select.POLLIN)
        self._lock = threading.Lock()
        self._stash: list[bytes] = []
        self._stashed = 0
        self._stash_limit = stash_limit
        self._stash_dropped = 0  # 1: whitespace only was dropped, 2: text was dropped
        self._decoder = _Utf8Decoder("replace")
        self._in_child = False

    def start(self) -> None:
        # A bare thread (no threading.Thread object): it runs until the session's process ends, nothing joins
        # it, and starting it this way copies fewer of the template's pages into the session.
        _thread.start_new_thread(self._pump, ())

    def pending(self) -> bool:
        """Whether anything waits to be moved into the writer (cheap: no read)."""
        return bool(self._stash) or bool(self._poll.poll(0))

    def drain(self) -> None:
        """Move everything that arrived so far into the writer (cell thread only)."""
        if self._in_child:
            return
        with self._lock:  # also orders threads of a cell that print while output of a subprocess arrives
            stash, dropped = self._stash, self._stash_dropped
            self._stash, self._stashed, self._stash_dropped = [], 0, 0
            chunks = stash + self._read_available()[0]
            writer = self.writer
            if writer is None:
                return
            for chunk in chunks:
                writer._append(self._decoder.decode(chunk))
            if dropped:
                writer._drop(text=dropped == 2)

    def discard(self) -> None:
        """Forget what arrived between cells."""
        if self._in_child:
            return
        with self._lock:
            self._stash, self._stashed, self._stash_dropped = [], 0, 0
            self._read_available()
        self._decoder.reset()

    def _read_available(self) -> tuple[list[bytes], bool]:
        """Everything readable now, and False once every write end is closed."""
        out: list[bytes] = []
        while True:
            try:
                data = os.read(self._r, 65536)
            except BlockingIOError:
                return out, True
            except OSError:
                return out, False
            if not data:
                return out, False
            out.append(data)

    def _pump(self) -> None:
        # Process-directed SIGINT must reach the main thread (it interrupts the cell), never this one.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        poller = select.poll()
        poller.register(self._r, select.POLLIN | select.POLLHUP)
        alive = True
        while alive:
            poller.poll()
            with self._lock:
                chunks, alive = self._read_available()
                for data in chunks:
                    if self._stashed < self._stash_limit:
                        self._stash.append(data)
                        self._stashed += len(data)
                    elif self._stash_dropped < 2:
                        self._stash_dropped = 1 if data.isspace() and self._stash_dropped == 0 else 2

    def before_fork(self) -> None:
        self._lock.acquire()

    def after_fork_in_parent(self) -> None:
        self._lock.release()

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._in_child = True


class _EmptyBinary(io.RawIOBase):
    """sys.stdin.buffer: always at end of file; closing it does nothing."""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        return 0

    def fileno(self) -> int:
        return 0

    def close(self) -> None:
        pass


class NoStdin(io.TextIOBase):
    """sys.stdin of a session: at end of file, as /dev/null is (and as it was in the seed's sandbox), so
    `input()` raises `EOFError: EOF when reading a line` at once instead of hanging."""

    encoding = "utf-8"
    errors = "strict"
    name = "<stdin>"

    def __init__(self) -> None:
        super().__init__()
        self._buffer = _EmptyBinary()

    @property
    def buffer(self):
        return self._buffer

    def readable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def read(self, size: int | None = -1) -> str:
        return ""

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        return ""

    def readlines(self, hint: int | None = -1) -> list[str]:  # type: ignore[override]
        return []

    def fileno(self) -> int:
        return 0  # /dev/null in a session

    def close(self) -> None:
        pass
