"""Exceptions with messages that name the problem and the fix."""
from __future__ import annotations


class HarmonyAgentError(RuntimeError):
    """Base class: something the user can fix (configuration, files, model)."""


class VocabularyError(HarmonyAgentError):
    """The Harmony encoding's o200k_base vocabulary could not be loaded."""


class EngineError(HarmonyAgentError):
    """The inference engine could not be created or used."""
