"""Readable views of a trajectory: plain text for ``print(result)``, a rich renderable for rich consoles.

Both show the problem, each analysis message, each python call (code highlighted in the rich view) with its
status and output, the final answer, and the counts (tokens, calls, seconds). They work on a
:class:`~harmony_agent.Result` or on a saved output line of ``harmony-eval`` (``harmony-eval show``), through
one intermediate :class:`Transcript`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MessageView", "Transcript", "message_views", "render_text", "render_rich", "short_repr"]


@dataclass(frozen=True)
class MessageView:
    """One Harmony message as plain data: author role (and name, for tools), channel, recipient, text."""

    role: str
    text: str
    channel: str | None = None
    recipient: str | None = None
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "name": self.name,
            "channel": self.channel,
            "recipient": self.recipient,
            "text": self.text,
        }


def _view(message: Any) -> MessageView:
    if isinstance(message, MessageView):
        return message
    if isinstance(message, Mapping):
        return MessageView(
            str(message.get("role") or ""),
            str(message.get("text") or ""),
            message.get("channel"),
            message.get("recipient"),
            message.get("name"),
        )
    author = message.author
    role = getattr(author.role, "value", str(author.role))
    text = "".join(getattr(part, "text", "") or "" for part in message.content)
    return MessageView(
        role, text, message.channel or None, (message.recipient or "").strip() or None, author.name or None
    )


def message_views(messages: Sequence[Any]) -> list[MessageView]:
    """Views of openai_harmony ``Message`` objects (or of their saved dicts)."""
    return [_view(m) for m in messages]


@dataclass
class Transcript:
    """What the renderers show; built from a ``Result`` or from a saved output line."""

    messages: list[MessageView]
    tool_calls: list[dict] = field(default_factory=list)  # status, seconds (and code) per executed call
    problem: str | None = None
    answer: str | None = None
    finish_reason: str | None = None
    num_model_tokens: int = 0
    num_tool_tokens: int = 0
    seconds: float | None = None
    seed: int | None = None
    error: str | None = None
    title: str | None = None  # e.g. the sample's id
    verdict: str | None = None  # e.g. "correct (expected 204)"

    @classmethod
    def from_result(cls, result: Any) -> Transcript:
        calls = [{"status": c.status, "seconds": c.seconds, "code": c.code} for c in result.tool_calls]
        return cls(
            message_views(result.messages),
            calls,
            result.problem,
            result.answer,
            result.finish_reason,
            result.num_model_tokens,
            result.trajectory.num_tool_tokens,
            result.seconds,
            result.seed,
            result.error,
        )

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Transcript:
        """From an output line (its ``messages``; older lines without them show ``generation`` as it is)."""
        messages = rec.get("messages")
        if messages is None:
            messages = [{"role": "assistant", "text": str(rec.get("generation") or "")}]
        views = [m for m in message_views(messages) if m.role not in ("system", "developer", "user")]
        problem = rec.get("prompt") or rec.get("problem")
        start, end = rec.get("generation_start_time"), rec.get("generation_end_time")
        verdict = None
        if "symbolic_correct" in rec:
            verdict = ("correct" if rec["symbolic_correct"] else "wrong") + f" (expected {rec.get('expected_answer')})"
        return cls(
            views,
            list(rec.get("tool_calls") or []),
            problem,
            rec.get("predicted_answer"),
            rec.get("finish_reason"),
            int(rec.get("num_generated_tokens") or 0),
            int(rec.get("num_tool_tokens") or 0),
            (end - start) if start is not None and end is not None else None,
            rec.get("seed"),
            rec.get("error"),
            str(rec.get("id")),
            verdict,
        )

    def steps(self) -> list[tuple[str, MessageView, dict | None]]:
        """``(kind, message, call record)`` in order; kind is analysis, final, call, output or other."""
        out: list[tuple[str, MessageView, dict | None]] = []
        pending = list(self.tool_calls)
        for m in self.messages:
            if m.role == "assistant" and m.recipient:
                record = None
                if pending and pending[0].get("code", m.text) == m.text:
                    record = pending.pop(0)
                out.append(("call", m, record))
            elif m.role == "tool":
                out.append(("output", m, None))
            elif m.role == "assistant" and m.channel in ("analysis", "final", "commentary"):
                out.append((m.channel or "other", m, None))
            else:
                out.append(("other", m, None))
        return out

    def header(self) -> str:
        parts = [self.title or "trajectory"]
        if self.seed is not None:
            parts.append(f"seed {self.seed}")
        return " · ".join(parts)

    def footer(self) -> str:
        parts = [f"answer {self.answer if self.answer is not None else '(none)'}"]
        if self.verdict:
            parts.append(self.verdict)
        parts.append(f"finish {self.finish_reason}")
        parts.append(f"{self.num_model_tokens} model + {self.num_tool_tokens} tool tokens")
        calls = sum(1 for kind, _m, _r in self.steps() if kind == "call")
        parts.append(f"{calls} python call{'s' if calls != 1 else ''}")
        if self.seconds is not None:
            parts.append(f"{self.seconds:.1f} s")
        if self.error:
            parts.append(f"error: {self.error}")
        return " · ".join(parts)


def _as_transcript(obj: Any) -> Transcript:
    if isinstance(obj, Transcript):
        return obj
    if isinstance(obj, Mapping):
        return Transcript.from_record(obj)
    return Transcript.from_result(obj)


def _call_title(index: int, message: MessageView, record: dict | None) -> str:
    title = f"{message.recipient} call {index}"
    if record is not None:
        title += f" · {record.get('status')} · {float(record.get('seconds') or 0.0):.2f} s"
    return title


def render_text(obj: Any) -> str:
    """Plain-text view of a ``Result``, a saved output line or a :class:`Transcript`."""
    t = _as_transcript(obj)
    lines = [f"=== {t.header()} ==="]
    if t.problem:
        lines += ["--- problem ---", t.problem.rstrip()]
    index = 0
    for kind, m, record in t.steps():
        if kind == "call":
            index += 1
            lines += [f"--- {_call_title(index, m, record)} ---", m.text.rstrip()]
        elif kind == "output":
            lines += [f"--- output ({m.name or 'tool'}) ---", m.text.rstrip() or "(no output)"]
        else:
            label = kind if kind != "other" else f"{m.role}{'/' + m.channel if m.channel else ''}"
            lines += [f"--- {label} ---", m.text.rstrip()]
    lines.append(f"=== {t.footer()} ===")
    return "\n".join(lines)


def render_rich(obj: Any) -> Any:
    """A rich renderable (``rich.console.Group`` of panels) of a ``Result``, a saved line or a Transcript."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.syntax import Syntax
    from rich.text import Text

    t = _as_transcript(obj)
    parts: list[Any] = [Text(t.header(), style="bold")]
    if t.problem:
        parts.append(Panel(Text(t.problem.rstrip()), title="problem", title_align="left", border_style="blue"))
    index = 0
    for kind, m, record in t.steps():
        if kind == "call":
            index += 1
            code = Syntax(m.text.rstrip(), "python", theme="ansi_dark", word_wrap=True)
            style = "green" if record is None or record.get("status") == "ok" else "red"
            parts.append(Panel(code, title=_call_title(index, m, record), title_align="left", border_style=style))
        elif kind == "output":
            parts.append(
                Panel(
                    Text(m.text.rstrip() or "(no output)"),
                    title=f"output ({m.name or 'tool'})",
                    title_align="left",
                    border_style="dim",
                )
            )
        elif kind == "final":
            parts.append(Panel(Text(m.text.rstrip()), title="final", title_align="left", border_style="bold green"))
        else:
            label = kind if kind != "other" else f"{m.role}{'/' + m.channel if m.channel else ''}"
            parts.append(
                Panel(
                    Text(m.text.rstrip(), style="dim" if kind == "analysis" else ""),
                    title=label,
                    title_align="left",
                    border_style="dim",
                )
            )
    parts.append(Text(t.footer(), style="bold"))
    return Group(*parts)


def short_repr(result: Any) -> str:
    """One line: answer, finish reason, seed, token and call counts, seconds (no token ids)."""
    return (
        f"Result(answer={result.answer!r}, finish_reason={result.finish_reason!r}, seed={result.seed!r}, "
        f"model_tokens={result.num_model_tokens}, tool_tokens={result.trajectory.num_tool_tokens}, "
        f"tool_calls={len(result.tool_calls)}, seconds={result.seconds:.2f}"
        + (f", error={result.error!r}" if result.error else "")
        + ")"
    )
