"""Exceptions with messages that name the problem and the fix."""

from __future__ import annotations

from typing import Any


class HarmonyAgentError(RuntimeError):
    """Base class: something the user can fix (configuration, files, model)."""


class VocabularyError(HarmonyAgentError):
    """The Harmony encoding's o200k_base vocabulary could not be loaded."""


class EngineError(HarmonyAgentError):
    """The inference engine could not be created or used."""


class EngineFailure(EngineError):
    """The engine failed during a run (``step`` raised). ``unfinished`` holds the tasks that were running, in
    the order they started, so a driver can submit them again; tasks not yet taken from the input iterable are
    still in it. The engine's own exception is the ``__cause__``."""

    def __init__(self, message: str, unfinished: list[Any]):
        super().__init__(message)
        self.unfinished = unfinished


class ToolRuntimeError(HarmonyAgentError):
    """The python tool runtime could not start at all, so no call could run."""
