"""An append-only token trajectory: prompt, sampled model tokens and inserted tool tokens, side by side.

Nothing is ever re-rendered: the model's sampled tokens are kept exactly as sampled, tool messages are
appended after them. ``loss_mask`` is 1 for sampled tokens and 0 elsewhere; ``logprobs`` holds the sampled
token's log-probability (0.0 for prompt and tool tokens, and for sampled tokens when logprobs were off).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, overload

SegmentKind = Literal["prompt", "model", "tool"]


@dataclass(frozen=True)
class Segment:
    """A run of tokens of one kind: ``token_ids[start:end]``."""

    kind: SegmentKind
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start


@dataclass
class Trajectory:
    """Token ids with their loss mask, logprobs and segments, all the same length.

    >>> t = Trajectory.from_prompt([1, 2, 3])
    >>> t.append_model([4, 5], [-0.5, -0.25]); t.append_tool([6]); t.append_model([7], None)
    >>> t.to_rl()["response_mask"], t.num_model_tokens, t.num_tool_tokens
    ([1, 1, 0, 1], 3, 1)
    """

    token_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    prompt_len: int = 0
    # running counts, so that reading them costs O(1) at any length (they follow ``segments``)
    _num_model: int = field(default=0, init=False, repr=False, compare=False)
    _num_tool: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._num_model = sum(len(s) for s in self.segments if s.kind == "model")
        self._num_tool = sum(len(s) for s in self.segments if s.kind == "tool")

    @classmethod
    def from_prompt(cls, prompt_ids: list[int]) -> Trajectory:
        n = len(prompt_ids)
        return cls(list(prompt_ids), [0] * n, [0.0] * n, [Segment("prompt", 0, n)], n)

    def _append(self, kind: SegmentKind, ids: list[int], mask: int, logprobs: list[float] | None) -> None:
        if not ids:
            return
        if logprobs is not None and len(logprobs) != len(ids):
            raise ValueError(f"{len(logprobs)} logprobs for {len(ids)} tokens")
        start = len(self.token_ids)
        self.token_ids.extend(ids)
        self.loss_mask.extend([mask] * len(ids))
        self.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))
        self.segments.append(Segment(kind, start, len(self.token_ids)))
        if kind == "model":
            self._num_model += len(ids)
        elif kind == "tool":
            self._num_tool += len(ids)

    def append_model(self, ids: list[int], logprobs: list[float] | None) -> None:
        """Append tokens the model sampled (loss mask 1)."""
        self._append("model", ids, 1, logprobs)

    def append_tool(self, ids: list[int]) -> None:
        """Append tokens the loop inserted: a tool message and the next ``<|start|>assistant`` (mask 0)."""
        self._append("tool", ids, 0, None)

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def num_model_tokens(self) -> int:
        return self._num_model

    @property
    def num_tool_tokens(self) -> int:
        return self._num_tool

    def snapshot(self) -> TokenView:
        """The token ids as they are now, without a copy (the list only grows, so the view never changes)."""
        return TokenView(self.token_ids, len(self.token_ids))

    @property
    def prompt_ids(self) -> list[int]:
        return self.token_ids[: self.prompt_len]

    @property
    def response_ids(self) -> list[int]:
        return self.token_ids[self.prompt_len :]

    def to_rl(self) -> dict[str, list]:
        """``prompt_ids``, ``response_ids``, ``response_mask``, ``response_logprobs``, aligned 1:1 (verl style)."""
        p = self.prompt_len
        return {
            "prompt_ids": self.token_ids[:p],
            "response_ids": self.token_ids[p:],
            "response_mask": self.loss_mask[p:],
            "response_logprobs": self.logprobs[p:],
        }

    def to_dict(self) -> dict:
        """A JSON-ready copy (segments as ``[kind, start, end]``)."""
        return {
            "token_ids": list(self.token_ids),
            "loss_mask": list(self.loss_mask),
            "logprobs": list(self.logprobs),
            "prompt_len": self.prompt_len,
            "segments": [[s.kind, s.start, s.end] for s in self.segments],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Trajectory:
        segments = [Segment(kind, start, end) for kind, start, end in data["segments"]]
        return cls(
            list(data["token_ids"]), list(data["loss_mask"]), list(data["logprobs"]), segments, int(data["prompt_len"])
        )


class TokenView(Sequence[int]):
    """A read-only view of the first ``length`` items of an append-only list: a request's prompt, no copy.

    >>> ids = [1, 2, 3]; view = TokenView(ids, 2); ids.append(4)
    >>> list(view), view == [1, 2], view[-1], len(view)
    ([1, 2], True, 2, 2)
    """

    __slots__ = ("_items", "_length")

    def __init__(self, items: list[int], length: int):
        self._items = items
        self._length = length

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> int: ...

    @overload
    def __getitem__(self, index: slice) -> list[int]: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self._items[slice(*index.indices(self._length))]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError("token index out of range")
        return self._items[index]

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(self._items, self._length)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TokenView):
            other = list(other)
        if not isinstance(other, (list, tuple)):
            return NotImplemented
        return len(other) == self._length and self._items[: self._length] == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"TokenView({list(self)!r})"
