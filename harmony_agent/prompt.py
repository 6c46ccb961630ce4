"""Render the Harmony prompt (system, optional developer, user) to tokens, once per trajectory."""
from __future__ import annotations

import datetime as _dt

from .config import REASONING_EFFORTS, PromptConfig
from .encoding import get_encoding, harmony

__all__ = ["REASONING_EFFORTS", "PromptConfig", "system_content", "prompt_messages", "render_prompt"]


def system_content(config: PromptConfig):
    """The system message content: reasoning effort, date and (when on) the python builtin tool."""
    oh = harmony()
    effort = {"low": oh.ReasoningEffort.LOW, "medium": oh.ReasoningEffort.MEDIUM, "high": oh.ReasoningEffort.HIGH}
    date = config.conversation_start_date or _dt.date.today().isoformat()
    content = oh.SystemContent.new().with_reasoning_effort(effort[config.reasoning_effort])
    content = content.with_conversation_start_date(date)
    if config.python:
        content = content.with_python_tool()
    return content


def prompt_messages(problem: str, config: PromptConfig) -> list:
    """The Harmony messages of the prompt, in order."""
    oh = harmony()
    messages = [oh.Message.from_role_and_content(oh.Role.SYSTEM, system_content(config))]
    if config.developer_instructions:
        developer = oh.DeveloperContent.new().with_instructions(config.developer_instructions)
        messages.append(oh.Message.from_role_and_content(oh.Role.DEVELOPER, developer))
    messages.append(oh.Message.from_role_and_content(oh.Role.USER, problem))
    return messages


def render_prompt(problem: str, config: PromptConfig | None = None) -> list[int]:
    """Prompt token ids, ending with ``<|start|>assistant`` so that the model writes the next message.

    >>> ids = render_prompt("What is 1+1?", PromptConfig(conversation_start_date="2025-01-01"))
    >>> ids[-1] == 173781  # "assistant", right after <|start|>
    True
    """
    if not isinstance(problem, str):
        raise TypeError(f"problem must be a str, got {type(problem).__name__}")
    oh = harmony()
    conversation = oh.Conversation.from_messages(prompt_messages(problem, config or PromptConfig()))
    return list(get_encoding().render_conversation_for_completion(conversation, oh.Role.ASSISTANT))
