"""Removing a directory tree that a session wrote, without recursion limits and without raising.

A cell can leave anything in a directory on the host (when sessions have no private tmpfs, see fsview.py):
100k entries, a 1500-deep tree (shutil.rmtree raises RecursionError there), files it made read-only. `rm -rf`
walks iteratively and does not cross into other mounts; spawned (not forked), it costs the caller nothing but
the wait, which the template never does on its request path.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading

log = logging.getLogger(__name__)


def start_removal(path: str) -> subprocess.Popen | None:
    """Start `rm -rf path` in a separate process and return it (None if there is nothing to remove)."""
    if not os.path.lexists(path):
        return None
    try:
        return subprocess.Popen(
            ["rm", "-rf", "--one-file-system", "--", path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
    except OSError as exc:
        log.warning("could not start removing %s: %s", path, exc)
        return None


def remove_tree(path: str, timeout: float | None = None) -> None:
    """Remove `path` and everything below it; never raises (what is left is logged)."""
    proc = start_removal(path)
    if proc is None:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning("removing %s takes longer than %s s; it goes on in the background", path, timeout)
        threading.Thread(target=proc.wait, name="tool_runtime-rm", daemon=True).start()  # reaps it when done
        return
    if os.path.lexists(path):
        log.warning("could not remove all of %s", path)
