"""Parse sampled tokens into Harmony messages, tolerating truncation and malformed output.

The model's tokens are never changed; parsing is only for display, answer extraction and finding the tool
call that ended a completion.
"""
from __future__ import annotations

from dataclasses import dataclass

from .encoding import CALL, get_encoding, harmony


@dataclass
class ParsedCompletion:
    """The messages of one completion, and the error that stopped parsing (None when it parsed cleanly)."""

    messages: list
    error: str | None = None

    @property
    def last(self):
        return self.messages[-1] if self.messages else None


@dataclass(frozen=True)
class ToolCall:
    """What the model addressed to a tool: recipient, channel, content type and the text it sent."""

    recipient: str | None
    channel: str | None
    content_type: str | None
    text: str
    error: str | None = None


def message_text(message) -> str:
    """The concatenated text content of a Harmony message."""
    return "".join(getattr(part, "text", "") or "" for part in message.content)


def parse_completion(token_ids: list[int]) -> ParsedCompletion:
    """Parse a completion that starts right after ``<|start|>assistant``.

    A completion cut by ``max_tokens`` inside a message keeps the partial message; one cut inside a header or
    containing tokens out of place keeps everything before the problem and reports it in ``error``.
    """
    oh = harmony()
    parser = oh.StreamableParser(get_encoding(), oh.Role.ASSISTANT, strict=False)
    error = None
    for token in token_ids:
        try:
            parser.process(token)
        except Exception as exc:  # HarmonyError: unexpected token for the parser's state
            error = str(exc)
            break
    else:
        try:
            parser.process_eos()
        except Exception as exc:  # ended inside a header
            error = str(exc)
    return ParsedCompletion(list(parser.messages), error)


def find_tool_call(parsed: ParsedCompletion, token_ids: list[int]) -> ToolCall | None:
    """The call a completion ended with (its last token is ``<|call|>``); None when it did not end on a call."""
    if not token_ids or token_ids[-1] != CALL:
        return None
    last = parsed.last
    if parsed.error is not None or last is None:
        return ToolCall(None, None, None, "", error=parsed.error or "empty message")
    recipient = (last.recipient or "").strip() or None
    return ToolCall(recipient, last.channel, last.content_type, message_text(last))
