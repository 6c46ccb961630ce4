"""What the loop tells the model after a call: tool messages rendered to tokens.

Every reply is a Harmony message from the tool (author ``tool``/name), addressed to the assistant, on the
call's channel, followed by ``<|start|>assistant`` so that the model writes the next message.
"""
from __future__ import annotations

import functools
import re

from .encoding import START, get_encoding, harmony

PYTHON = "python"


@functools.lru_cache(maxsize=1)
def _assistant_header() -> tuple[int, ...]:
    return (START, *get_encoding().encode("assistant", allowed_special=set()))


def tool_message(author: str, text: str, channel: str | None):
    """The Harmony message a tool sends back to the assistant."""
    oh = harmony()
    message = oh.Message.from_author_and_content(oh.Author.new(oh.Role.TOOL, author), text)
    return message.with_recipient("assistant").with_channel(channel or "analysis")


def render_reply(message) -> list[int]:
    """Tokens of a tool message plus ``<|start|>assistant``: what the loop appends to a trajectory."""
    return [*get_encoding().render(message), *_assistant_header()]


# Texts the model reads when a call cannot be run. Short, and each says what to do next.

def unknown_recipient(recipient: str) -> str:
    return f"Error: there is no tool named '{recipient}'. The only tool is '{PYTHON}': address code to={PYTHON}."


def python_disabled(recipient: str) -> str:
    return f"Error: no tools are available here ('{recipient}' was called). Continue without tools."


def missing_recipient() -> str:
    return f"Error: the message ended with a call but named no recipient. To run code, address it to={PYTHON}."


def malformed_call(error: str) -> str:
    return f"Error: the tool call could not be parsed ({error}). To run code, send a message to={PYTHON}."


def calls_exhausted(limit: int) -> str:
    return f"Error: the limit of {limit} tool calls is reached; no executions are left. Give your final answer now."


def runtime_failure(error: str) -> str:
    return f"Error: the python tool failed to run this call ({error})."


_SAFE_NAME = re.compile(r"[A-Za-z_][\w.\-]{0,63}")


def reply_author(recipient: str | None) -> str:
    """Who answers a call: the tool the model addressed when its name is sane, else ``python``."""
    if recipient and _SAFE_NAME.fullmatch(recipient):
        return recipient
    return PYTHON
