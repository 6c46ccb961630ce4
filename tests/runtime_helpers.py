"""What the tool-runtime tests read back from sessions and from the host's /proc (one copy for every test file)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def value(session, expr: str):
    """Evaluate `expr` in the session and return it as a Python value (via JSON)."""
    r = session.run(f"import json as _j; print(_j.dumps({expr}))")
    assert r.status == "ok", r.output
    return json.loads(r.output)


def state_and_parent(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) of a process from the host's /proc; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def state(pid: int) -> str:
    found = state_and_parent(pid)
    return found[0] if found else "gone"


def alive(pid: int) -> bool:
    return state(pid) not in ("Z", "gone")


def parent_of(pid: int) -> int:
    found = state_and_parent(pid)
    assert found is not None, f"process {pid} is gone"
    return found[1]


def descendants(pid: int, *, live: bool = False) -> set[int]:
    """All processes below `pid` (zombies too, unless `live`), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = state_and_parent(int(entry))
            if found is not None and not (live and found[0] == "Z"):
                children.setdefault(found[1], []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def describe(pids) -> list[str]:
    """For a failure message: what each live process of `pids` is and where it waits (state, wchan, parent)."""
    out = []
    for pid in pids:
        found = state_and_parent(pid)
        if found is None or found[0] == "Z":
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:80]
            wchan = Path(f"/proc/{pid}/wchan").read_text()
        except OSError:
            continue
        out.append(f"{pid} state={found[0]} ppid={found[1]} wchan={wchan} {cmd}")
    return out


def pss_kib(pid: int) -> int:
    """Proportional set size of a process (smaps_rollup), KiB."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise AssertionError(f"no Pss for {pid}")
