"""Timeouts: validation of user-given seconds, and waiting on a deadline without overflowing poll().

Every wait in the runtime is bounded by a deadline on `time.monotonic()`. A timeout is checked before anything
runs: a value the clock or poll() cannot hold would otherwise fail half-way (after the code was sent), leaving
the session's channel in an unknown state.
"""

from __future__ import annotations

import math
import numbers
import select
import time

MAX_TIMEOUT = 7 * 24 * 3600.0  # one week; poll() holds at most 2**31 - 1 ms (24.8 days)
_POLL_SLICE_MS = 3_600_000  # a single poll() call waits at most an hour; callers loop to their deadline


def check_timeout(value: object, name: str, *, zero_ok: bool = False) -> float:
    """`value` as float seconds, or ValueError/TypeError naming the problem and what is accepted."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    seconds = float(value)
    if math.isnan(seconds) or seconds < 0 or (seconds == 0 and not zero_ok) or seconds > MAX_TIMEOUT:
        raise ValueError(
            f"{name} must be a finite number of seconds {'>= 0' if zero_ok else '> 0'} and at most "
            f"{MAX_TIMEOUT:.0f} (one week), got {value!r}"
        )
    return seconds


def poll_ms(deadline: float) -> int:
    """Milliseconds to pass to poll() for `deadline` (0 when it has passed), rounded up, at most an hour."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return 0
    return min(_POLL_SLICE_MS, math.ceil(remaining * 1000))


def wait_fd(fd: int, events: int, deadline: float) -> int:
    """Wait until `fd` has one of `events` (also POLLHUP/POLLERR) or `deadline` passes; the revents, or 0."""
    poller = select.poll()
    poller.register(fd, events)
    while True:
        ms = poll_ms(deadline)
        ready = poller.poll(ms)
        if ready:
            return ready[0][1]
        if ms == 0 or time.monotonic() >= deadline:
            return 0
