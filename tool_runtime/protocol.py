"""Length-prefixed JSON frames over a stream socket, with a size cap on every read.

Why JSON and not pickle: a cell can reach its own end of the channel (it is a file descriptor in the session's
process) and write anything on it. Anything the parent decodes must therefore be inert data. A frame is a 4-byte
big-endian length followed by that many bytes of UTF-8 JSON holding one object. A length above the reader's cap,
bad UTF-8/JSON, or a non-object is a ProtocolError: the caller treats the peer as broken and kills it.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import time
from typing import Any

from .timeouts import wait_fd

HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame; the connection cannot be trusted any more."""


class PeerClosed(EOFError):
    """The peer closed the connection (usually: the process died)."""


def encode(obj: dict[str, Any], max_bytes: int) -> bytes:
    data = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    if len(data) > max_bytes:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds the cap of {max_bytes}")
    return HEADER.pack(len(data)) + data


def send_frame(sock: socket.socket, obj: dict[str, Any], max_bytes: int) -> None:
    sock.sendall(encode(obj, max_bytes))


def decode(data: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(data.decode("utf-8", "surrogatepass"))
    except Exception as exc:  # noqa: BLE001 - any failure to parse untrusted bytes is a protocol error
        raise ProtocolError(f"undecodable frame: {type(exc).__name__}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("frame is not a JSON object")
    return obj


class FrameReader:
    """Reads frames from one socket; resumable across timeouts (a partial frame is kept, not lost)."""

    def __init__(self, sock: socket.socket, max_bytes: int):
        self.sock = sock
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._eof = False

    def _need(self) -> int:
        if len(self._buf) < HEADER.size:
            return HEADER.size - len(self._buf)
        (length,) = HEADER.unpack_from(self._buf)
        if length > self.max_bytes:
            raise ProtocolError(f"frame of {length} bytes exceeds the cap of {self.max_bytes}")
        return HEADER.size + length - len(self._buf)

    def _complete(self) -> dict[str, Any] | None:
        if len(self._buf) < HEADER.size:
            return None
        (length,) = HEADER.unpack_from(self._buf)
        if length > self.max_bytes:
            raise ProtocolError(f"frame of {length} bytes exceeds the cap of {self.max_bytes}")
        if len(self._buf) < HEADER.size + length:
            return None
        data = bytes(self._buf[HEADER.size : HEADER.size + length])
        del self._buf[: HEADER.size + length]
        return decode(data)

    def read(self, deadline: float | None = None) -> dict[str, Any]:
        """Next frame. Raises TimeoutError at `deadline` (time.monotonic()), PeerClosed on EOF."""
        while True:
            frame = self._complete()
            if frame is not None:
                return frame
            want = self._need()
            if self._eof:
                raise PeerClosed("connection closed by peer")
            # poll, not select(): select fails for fd numbers >= 1024
            if deadline is not None and (
                time.monotonic() >= deadline or not wait_fd(self.sock.fileno(), select.POLLIN, deadline)
            ):
                raise TimeoutError("no complete frame before the deadline")
            try:
                chunk = self.sock.recv(min(want, 1 << 20))
            except (ConnectionResetError, BrokenPipeError) as exc:
                raise PeerClosed(str(exc)) from None
            except BlockingIOError:
                continue
            if not chunk:
                self._eof = True
                raise PeerClosed("connection closed by peer")
            self._buf += chunk

    def pump(self, max_read: int = 1 << 20) -> list[dict[str, Any]]:
        """Without blocking: read what has arrived (up to `max_read` bytes) and return the complete frames.

        Raises PeerClosed once the peer has closed and no complete frame is left, ProtocolError on a bad frame.
        """
        got = 0
        while got < max_read and not self._eof:
            try:
                want = max(self._need(), 1 << 16)  # _need() also rejects an oversized header at once
                chunk = self.sock.recv(min(want, max_read - got), socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except (ConnectionResetError, BrokenPipeError):
                self._eof = True
                break
            if not chunk:
                self._eof = True
                break
            got += len(chunk)
            self._buf += chunk
        frames = []
        while (frame := self._complete()) is not None:
            frames.append(frame)
        if not frames and self._eof:
            raise PeerClosed("connection closed by peer")
        return frames
