"""Forked, persistent, isolated IPython sessions for running untrusted model-written Python.

    from tool_runtime import SessionPool
    with SessionPool(max_sessions=256, timeout=10.0, max_output_chars=1000) as pool:
        session = pool.open()
        result = session.run("x = 21 * 2\\nx")     # ExecResult(output="42\\n", status="ok", ...)

See docs/tool_runtime.md for what is isolated, every knob, and the exact texts the model reads.
"""

from .config import RuntimeConfig
from .launcher import TemplateError
from .pool import PoolExhaustedError, SessionPool
from .result import ExecResult
from .session import Session, SessionClosedError

__all__ = [
    "SessionPool",
    "Session",
    "ExecResult",
    "RuntimeConfig",
    "PoolExhaustedError",
    "SessionClosedError",
    "TemplateError",
]
