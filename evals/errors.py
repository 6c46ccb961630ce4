"""Errors the evals package reports to users as one line (the CLIs exit with code 2)."""

from __future__ import annotations


class EvalError(Exception):
    """Bad input or setup: the message names the problem and the fix, on one line."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exception types the CLIs turn into one line and exit code 2.

    `harmony_agent.errors.HarmonyAgentError` (vocabulary, model and engine setup problems) joins
    `EvalError` when harmony_agent provides it.
    """
    types: list[type[BaseException]] = [EvalError]
    try:
        from harmony_agent.errors import HarmonyAgentError
    except Exception:  # harmony_agent absent or older: only our own errors
        pass
    else:
        types.append(HarmonyAgentError)
    return tuple(types)


def one_line(exc: BaseException) -> str:
    """The exception's message squeezed onto one line (type name when it has no message)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
