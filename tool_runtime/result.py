"""ExecResult, and every text the model reads that the runtime itself writes (one place, documented verbatim).

The cell's own output is what the seed's sandbox (NeMo-Skills) returned for it: nothing for no output, one
trailing newline otherwise, `<output cut>` after `max_output_chars` characters. The runtime adds text only where
the model would otherwise be misled: the timeout line, and a note when the session's state was lost.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "error", "timeout", "crashed"]

CUT_MARKER = "<output cut>"
STATE_LOST = "[The Python session was restarted: all variables, imports and files of the previous session are gone.]"


@dataclass(frozen=True)
class ExecResult:
    """What one cell produced.

    output:     exactly the text the model reads ("" when the cell printed nothing; docs/tool_runtime.md lists
                every case)
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


def cell_text(output: str, cut: bool) -> str:
    """The cell's own output (already finished by the session) with the cut marker where it was cut."""
    return output + CUT_MARKER if cut else output


def timeout_kept(output: str, t: float) -> str:
    """A cell stopped by the interrupt, state kept: its output so far, then the seed's timeout line (right
    after the cut marker when the output was cut, as the seed's sandbox wrote it)."""
    return f"{output}{timed_out(t)}\n"


def timeout_lost(t: float) -> str:
    """A cell that ignored the interrupt: the session was killed and restarted; its output is gone."""
    return f"{timed_out(t)}\n{STATE_LOST}\n"


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
        hint = {
            "SIGKILL": ", e.g. out of memory or a CPU-time limit",
            "SIGSEGV": ", e.g. a stack overflow",
            "SIGXCPU": ", the CPU-time limit",
        }.get(name, "")
        return f"the process was killed by {name}{hint}"
    if exit_status.get("unresponsive"):
        return "the process stopped responding"
    return f"the process exited with code {exit_status.get('code')}"


def crashed(reason: str) -> str:
    return f"[The Python session crashed ({reason}).]\n{STATE_LOST}\n"
