"""ExecResult, and every text the model reads that the runtime itself writes (one place, documented verbatim)."""
from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "error", "timeout", "crashed"]

NO_OUTPUT = "[no output]"
CUT_MARKER = "<output cut>"
STATE_KEPT = "[The cell was interrupted; the session's variables are kept.]"
STATE_LOST = ("[The Python session was restarted: all variables, imports and files of the previous session "
              "are gone.]")
EXIT_NOTE = "[exit() does not end this session: the session keeps running and its variables are kept.]"
SYSTEM_EXIT_NOTE = "[sys.exit() does not end this session: the cell stopped here and variables are kept.]"


@dataclass(frozen=True)
class ExecResult:
    """What one cell produced.

    output:     exactly the text the model reads (never empty; see docs/tool_runtime.md for every case)
    status:     "ok" | "error" (the cell raised) | "timeout" | "crashed" (the session process died)
    state_lost: True when the session had to be restarted, so earlier variables are gone
    seconds:    wall time of this cell in its session (no queueing, no restart time)
    """

    output: str
    status: Status
    state_lost: bool
    seconds: float


def format_seconds(t: float) -> str:
    """10 -> "10.0", 1.5 -> "1.5": the form of `Execution timed out after 10.0 seconds`."""
    return repr(round(float(t), 3))


def timed_out(t: float) -> str:
    return f"Execution timed out after {format_seconds(t)} seconds"


def signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def crash_reason(exit_status: dict | None, *, protocol_error: str | None = None) -> str:
    """Why the session is gone, in a few words the model can use ("killed by SIGSEGV")."""
    if protocol_error:
        return f"it broke the runtime protocol: {protocol_error}"
    if not exit_status:
        return "the process disappeared"
    if exit_status.get("signal"):
        name = signal_name(int(exit_status["signal"]))
        hint = {"SIGKILL": ", e.g. out of memory or a CPU-time limit", "SIGSEGV": ", e.g. a stack overflow",
                "SIGXCPU": ", the CPU-time limit"}.get(name, "")
        return f"the process was killed by {name}{hint}"
    if exit_status.get("unresponsive"):
        return "the process stopped responding"
    return f"the process exited with code {exit_status.get('code')}"


def crashed(reason: str) -> str:
    return f"[The Python session crashed ({reason}).]\n{STATE_LOST}"


def join(*parts: str) -> str:
    """Join non-empty parts, each starting on its own line."""
    out = ""
    for p in parts:
        if not p:
            continue
        if out and not out.endswith("\n"):
            out += "\n"
        out += p
    return out
