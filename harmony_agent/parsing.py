"""Parse sampled tokens into Harmony messages, in time linear in the tokens, whatever the model wrote.

The model's tokens are never changed; parsing is only for display, answer extraction and finding the tool call
that ended a completion. The parser is the loop's own small state machine over the special tokens (header ->
content -> between messages) rather than ``openai_harmony.StreamableParser``: that one re-examines the header on
every header token (120k garbage tokens took seconds) and, given a ``<|call|>`` inside a header, reports the
*previous* message as the last one, so a stale call would run again. Here a header is decoded once, when it ends,
and a call is only the message that ``<|call|>`` itself ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from .encoding import CALL, END, MESSAGE, RETURN, START, get_encoding, harmony

_ROLES = ("assistant", "user", "system", "developer", "tool")


@dataclass(frozen=True)
class ToolCall:
    """What the model addressed to a tool: recipient, channel, content type and the text it sent.

    ``error`` says why the call cannot be run as it stands (malformed header, ``<|call|>`` outside a message).
    """

    recipient: str | None
    channel: str | None
    content_type: str | None
    text: str
    error: str | None = None


@dataclass
class ParsedCompletion:
    """The messages of one completion, the call it ended with (if any), and the first parse problem."""

    messages: list
    call: ToolCall | None = None
    error: str | None = None

    @property
    def last(self):
        return self.messages[-1] if self.messages else None


def message_text(message) -> str:
    """The concatenated text content of a Harmony message."""
    return "".join(getattr(part, "text", "") or "" for part in message.content)


@dataclass
class _Header:
    role: str
    name: str | None = None
    channel: str | None = None
    recipient: str | None = None
    content_type: str | None = None
    error: str | None = None


def parse_header(text: str, with_role: bool) -> _Header:
    """Split a header's text (``assistant<|channel|>analysis to=python code``) into its fields; linear time.

    >>> h = parse_header("<|channel|>analysis to=python code", with_role=False)
    >>> h.role, h.channel, h.recipient, h.content_type, h.error
    ('assistant', 'analysis', 'python', 'code', None)
    >>> parse_header("functions.x to=assistant<|channel|>commentary", with_role=True).name
    'functions.x'
    """
    head = _Header("assistant")
    if with_role:
        cut = len(text)
        for sep in (" ", "\t", "\n", "<|"):
            at = text.find(sep)
            if at != -1:
                cut = min(cut, at)
        word, text = text[:cut], text[cut:]
        if not word:
            head.error = "no role after <|start|>"
        elif word in _ROLES:
            head.role = word
        else:
            head.role, head.name = "tool", word
    parts = text.split("<|channel|>")
    if len(parts) > 2:
        head.error = head.error or "more than one <|channel|> in a header"
    for i, part in enumerate(parts):
        words = part.split()
        if i == 1:
            if not words or words[0].startswith(("to=", "<|")):
                head.error = head.error or "empty channel"
            else:
                head.channel = words.pop(0)
        for w in words:
            if w.startswith("to="):
                head.recipient = w[3:] or None
            else:
                head.content_type = w
    return head


class HarmonyParser:
    """Incremental parser of one trajectory's sampled tokens.

    Call :meth:`parse` with each completion (it starts right after ``<|start|>assistant``); the cost is linear in
    the completion's tokens, however long or garbled its headers are.
    """

    def __init__(self) -> None:
        self._enc = get_encoding()
        self._oh = harmony()

    def parse(self, token_ids: list[int]) -> ParsedCompletion:
        """The messages of a completion and, when its last token is ``<|call|>``, the call it makes."""
        out = ParsedCompletion([])
        state = "header"  # header -> content -> between (after <|end|>, expecting <|start|>)
        with_role = False  # the first header's role (assistant) is in the prompt
        header_start = content_start = 0
        head: _Header | None = None
        for i, token in enumerate(token_ids):
            if state == "header":
                if token == MESSAGE:
                    head = parse_header(self._enc.decode(token_ids[header_start:i]), with_role)
                    state, content_start = "content", i + 1
                elif token == START:  # a header abandoned for a new message
                    out.error = out.error or "<|start|> inside a message header"
                    with_role, header_start = True, i + 1
                elif token in (END, CALL, RETURN):
                    what = self._enc.decode([token])
                    out.error = out.error or f"{what} inside a message header"
                    if token == CALL and i == len(token_ids) - 1:
                        out.call = ToolCall(None, None, None, "", error=f"{what} inside a message header")
                    state = "between"
            elif state == "content":
                if token in (END, CALL, RETURN):
                    assert head is not None
                    out.messages.append(self._message(head, token_ids[content_start:i]))
                    if token == CALL and i == len(token_ids) - 1:
                        out.call = ToolCall(
                            head.recipient, head.channel, head.content_type, message_text(out.messages[-1]), head.error
                        )
                    state = "between"
                elif token == START:
                    out.error = out.error or "<|start|> inside a message (no <|end|>)"
                    out.messages.append(self._message(head, token_ids[content_start:i]))  # type: ignore[arg-type]
                    state, with_role, header_start = "header", True, i + 1
            else:  # between messages
                if token == START:
                    state, with_role, header_start = "header", True, i + 1
                else:
                    out.error = out.error or "text between messages (expected <|start|>)"
                    if token == CALL and i == len(token_ids) - 1:
                        out.call = ToolCall(None, None, None, "", error="<|call|> outside a message")
        if state == "content" and head is not None:  # cut by the budget inside a message: keep it, partial
            out.messages.append(self._message(head, token_ids[content_start:]))
        elif state == "header" and header_start < len(token_ids):
            out.error = out.error or "ended inside a message header"
        if head is not None and head.error and out.error is None:
            out.error = head.error
        return out

    def _message(self, head: _Header, content: list[int]):
        oh = self._oh
        role = oh.Role(head.role)
        message = oh.Message.from_author_and_content(oh.Author.new(role, head.name), self._enc.decode(content))
        if head.channel is not None:
            message = message.with_channel(head.channel)
        if head.recipient is not None:
            message = message.with_recipient(head.recipient)
        if head.content_type is not None:
            message = message.with_content_type(head.content_type)
        return message


def parse_completion(token_ids: list[int]) -> ParsedCompletion:
    """Parse a completion that starts right after ``<|start|>assistant`` (see :class:`HarmonyParser`).

    >>> from harmony_agent.encoding import get_encoding
    >>> ids = get_encoding().encode("<|channel|>analysis to=python code<|message|>print(1)<|call|>",
    ...                             allowed_special="all")
    >>> parse_completion(ids).call
    ToolCall(recipient='python', channel='analysis', content_type='code', text='print(1)', error=None)
    """
    return HarmonyParser().parse(token_ids)


def find_tool_call(parsed: ParsedCompletion, token_ids: list[int]) -> ToolCall | None:
    """The call a completion ended with (its last token is ``<|call|>``); None when it did not end on a call."""
    if not token_ids or token_ids[-1] != CALL:
        return None
    return parsed.call or ToolCall(None, None, None, "", error=parsed.error or "empty message")


__all__ = [
    "ToolCall",
    "ParsedCompletion",
    "HarmonyParser",
    "parse_completion",
    "find_tool_call",
    "message_text",
    "parse_header",
]
