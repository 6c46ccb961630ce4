"""What the loop tells the model after a call: tool messages rendered to tokens.

Every reply is a Harmony message from a tool (role ``tool``, a safe author name), addressed to the assistant, on a
valid channel, followed by ``<|start|>assistant`` so that the model writes the next message. Whatever the model
wrote, a reply never renders as a user, system, developer or assistant message, never echoes a garbled channel,
and quotes a name the model made up only in bounded length (so rendering a reply costs little).
"""

from __future__ import annotations

import functools
import re

from .encoding import START, get_encoding, harmony

PYTHON = "python"
#: Channels a reply may be sent on; anything else the model wrote is answered on ``analysis``.
CHANNELS = ("analysis", "commentary", "final")
#: Names that would render as another role if used as a tool's author name.
_ROLE_NAMES = ("user", "system", "developer", "assistant", "tool")
_SAFE_NAME = re.compile(r"[A-Za-z_][\w\-]*(?:\.[A-Za-z_][\w\-]*)*")
MAX_NAME_CHARS = 64
_SURROGATE = re.compile("[\ud800-\udfff]")


@functools.lru_cache(maxsize=1)
def _assistant_header() -> tuple[int, ...]:
    return (START, *get_encoding().encode("assistant", allowed_special=set()))


def clean_text(text: str) -> str:
    """``text`` as valid UTF-8 (lone surrogates, e.g. from a cell's output, become U+FFFD) that can be rendered."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)


def quote(name: str | None) -> str:
    """A name the model wrote, bounded for echoing back: ``'python.exec'``, or its start and ``...``.

    >>> quote("x" * 100)[-6:]
    "xx...'"
    """
    name = clean_text(name or "")
    if len(name) > MAX_NAME_CHARS:
        name = name[:MAX_NAME_CHARS] + "..."
    return repr(name) if "'" in name else f"'{name}'"


def reply_author(recipient: str | None) -> str:
    """Who answers a call: the tool the model addressed when its name is sane and no role's, else ``python``.

    >>> reply_author("functions.lookup"), reply_author("user"), reply_author("assistant.x"), reply_author("a b")
    ('functions.lookup', 'python', 'python', 'python')
    """
    if (
        recipient
        and len(recipient) <= MAX_NAME_CHARS
        and _SAFE_NAME.fullmatch(recipient)
        and recipient.split(".")[0].lower() not in _ROLE_NAMES
    ):
        return recipient
    return PYTHON


def reply_channel(channel: str | None) -> str:
    """The call's channel when it is a Harmony channel, else ``analysis``."""
    return channel if channel in CHANNELS else "analysis"


def tool_message(author: str, text: str, channel: str | None):
    """The Harmony message a tool sends back to the assistant (author and channel made safe here too)."""
    oh = harmony()
    message = oh.Message.from_author_and_content(oh.Author.new(oh.Role.TOOL, reply_author(author)), clean_text(text))
    return message.with_recipient("assistant").with_channel(reply_channel(channel))


@functools.lru_cache(maxsize=1)
def min_reply_tokens() -> int:
    """Tokens of the shortest possible reply: a call whose reply cannot fit in the context is not worth running."""
    return len(render_reply(tool_message(PYTHON, "", "analysis")))


def render_reply(message) -> list[int]:
    """Tokens of a tool message plus ``<|start|>assistant``: what the loop appends to a trajectory."""
    return [*get_encoding().render(message), *_assistant_header()]


# Texts the model reads when a call cannot be run. Short, and each says what to do next.


def unknown_recipient(recipient: str) -> str:
    return f"Error: there is no tool named {quote(recipient)}. The only tool is '{PYTHON}': address code to={PYTHON}."


def python_disabled(recipient: str) -> str:
    return f"Error: no tools are available here ({quote(recipient)} was called). Continue without tools."


def missing_recipient() -> str:
    return f"Error: the message ended with a call but named no recipient. To run code, address it to={PYTHON}."


def malformed_call(error: str) -> str:
    return (
        f"Error: the tool call could not be parsed ({clean_text(error)[:200]}). To run code, send a message "
        f"to={PYTHON}."
    )


def calls_exhausted(limit: int) -> str:
    return f"Error: the limit of {limit} tool calls is reached; no executions are left. Give your final answer now."


def runtime_failure(error: str) -> str:
    return f"Error: the python tool failed to run this call ({clean_text(error)[:500]})."
