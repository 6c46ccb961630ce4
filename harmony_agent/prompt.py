"""Render the Harmony prompt (system, optional developer, the conversation) to tokens, once per problem.

The input is a problem string (one user message) or a conversation: a list of Harmony ``Message``s or
OpenAI-style dicts (``{"role": "user", "content": "..."}``) with roles system, developer, user and assistant.
Dicts map as gpt-oss's chat template maps them: ``system`` and ``developer`` text become the developer message's
instructions, a past ``assistant`` turn is a ``final``-channel message. The system message (reasoning effort,
date, the python tool) always comes from :class:`PromptConfig`, unless a Harmony system message is given.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import Any

from .config import REASONING_EFFORTS, PromptConfig
from .encoding import get_encoding, harmony

__all__ = [
    "REASONING_EFFORTS",
    "PromptConfig",
    "system_content",
    "prompt_messages",
    "render_prompt",
    "check_problem",
    "DICT_ROLES",
]

#: Roles an OpenAI-style message dict may have.
DICT_ROLES = ("system", "developer", "user", "assistant")


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


def _check_text(text: str, where: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{where} is not valid text ({exc.reason} at position {exc.start}, e.g. a lone surrogate "
            "left by a bad decode): clean it, e.g. text.encode('utf-8', 'replace').decode()"
        ) from None
    return text


def _dict_text(message: dict, index: int) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return _check_text(content, f"message {index}")
    if isinstance(content, list) and all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in content):
        return _check_text("".join(p["text"] for p in content), f"message {index}")  # [{"type": "text", ...}]
    raise ValueError(
        f"message {index}: 'content' must be a string (or a list of {{'type': 'text', 'text': ...}} "
        f"parts), got {type(content).__name__}"
    )


def check_problem(problem: Any) -> None:
    """Raise a clear error unless ``problem`` is a string or a non-empty list of messages (cheap; no rendering)."""
    if isinstance(problem, str):
        _check_text(problem, "the problem")
        return
    oh = harmony()
    if isinstance(problem, dict):
        raise TypeError(
            "a problem is a string or a list of messages, got one message dict: wrap the conversation "
            "in a list, e.g. run([messages]) or Task([{'role': 'user', 'content': ...}])"
        )
    if not isinstance(problem, Sequence) or isinstance(problem, (bytes, bytearray)) or not problem:
        raise TypeError(f"a problem is a string or a non-empty list of messages, got {type(problem).__name__}")
    for i, message in enumerate(problem):
        if isinstance(message, oh.Message):
            continue
        if not isinstance(message, dict):
            raise TypeError(
                f"message {i} is a {type(message).__name__}: use openai_harmony.Message or a dict "
                "like {'role': 'user', 'content': '...'}"
            )
        if message.get("role") not in DICT_ROLES:
            raise ValueError(f"message {i} has role {message.get('role')!r}; valid: {', '.join(DICT_ROLES)}")
        _dict_text(message, i)


def prompt_messages(problem: str | Sequence[Any], config: PromptConfig) -> list:
    """The Harmony messages of the prompt, in order."""
    oh = harmony()
    check_problem(problem)
    conversation = [{"role": "user", "content": problem}] if isinstance(problem, str) else list(problem)
    instructions = [config.developer_instructions] if config.developer_instructions else []
    system = developer = None
    body = []
    for i, message in enumerate(conversation):
        if isinstance(message, oh.Message):
            role = message.author.role
            if role == oh.Role.SYSTEM:
                system = message
            elif role == oh.Role.DEVELOPER:
                developer = message
            else:
                body.append(message)
        elif message["role"] in ("system", "developer"):
            instructions.append(_dict_text(message, i))
        elif message["role"] == "user":
            body.append(oh.Message.from_role_and_content(oh.Role.USER, _dict_text(message, i)))
        else:
            body.append(
                oh.Message.from_role_and_content(oh.Role.ASSISTANT, _dict_text(message, i)).with_channel("final")
            )
    messages = [system or oh.Message.from_role_and_content(oh.Role.SYSTEM, system_content(config))]
    if developer is None and instructions:
        developer = oh.Message.from_role_and_content(
            oh.Role.DEVELOPER, oh.DeveloperContent.new().with_instructions("\n\n".join(instructions))
        )
    if developer is not None:
        messages.append(developer)
    return messages + body


def render_prompt(problem: str | Sequence[Any], config: PromptConfig | None = None) -> list[int]:
    """Prompt token ids, ending with ``<|start|>assistant`` so that the model writes the next message.

    >>> ids = render_prompt("What is 1+1?", PromptConfig(conversation_start_date="2025-01-01"))
    >>> ids[-1] == 173781  # "assistant", right after <|start|>
    True
    >>> ids == render_prompt([{"role": "user", "content": "What is 1+1?"}],
    ...                      PromptConfig(conversation_start_date="2025-01-01"))
    True
    """
    oh = harmony()
    conversation = oh.Conversation.from_messages(prompt_messages(problem, config or PromptConfig()))
    return list(get_encoding().render_conversation_for_completion(conversation, oh.Role.ASSISTANT))
