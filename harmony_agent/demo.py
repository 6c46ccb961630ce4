"""Try harmony-agent without a GPU: ``python -m harmony_agent.demo`` (or ``make demo``).

It builds the tiny Harmony model (:mod:`harmony_agent.testing`; once, then cached), then ``solve``-s its scripted
problems on vLLM's CPU build with real python calls run in the tool runtime's sessions, and prints each
conversation: the analysis, every python call's code and output, the final answer, tokens and time.

The tiny model replays scripted transcripts token by token: it shows the machinery (the token-level loop, the
persistent python sessions, the exact trajectory), not reasoning. With a real model the same call is
``solve(problem, model="openai/gpt-oss-20b")``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
import time
import warnings
from typing import TextIO

logger = logging.getLogger(__name__)

RULE = "-" * 100


def render(result, out: TextIO) -> None:
    """A plain-text transcript of a :class:`harmony_agent.Result`: messages, then answer, tokens and time."""
    from .parsing import message_text

    print(f"problem: {result.problem}", file=out)
    for message in result.messages:
        text = message_text(message)
        role = message.author.role.value
        recipient = message.recipient or ""
        if role == "assistant" and recipient.startswith("python"):
            print("  python call:", file=out)
            print(textwrap.indent(text.rstrip("\n"), "    | "), file=out)
        elif role == "tool":
            print(f"  {message.author.name or 'tool'} output:", file=out)
            print(textwrap.indent(text.rstrip("\n") or "(nothing printed)", "    > "), file=out)
        elif role == "assistant":
            label = message.channel or "message"
            if recipient:
                label += f" to={recipient}"
            print(f"  [{label}] {text}", file=out)
        else:
            print(f"  [{role}] {text}", file=out)
    print(
        f"answer: {result.answer}   finish: {result.finish_reason}   python calls: {len(result.tool_calls)}   "
        f"tokens: {result.num_model_tokens} sampled + {result.num_tool_tokens} tool   time: {result.seconds:.2f} s",
        file=out,
    )


def run(out: TextIO = sys.stdout, problems: list[int] | None = None) -> list:
    """Build or load the tiny model, solve the chosen scripted problems, print each; return the Results."""
    from . import solve
    from .testing import SCRIPTED_PROBLEMS, build, engine_kwargs

    chosen = [SCRIPTED_PROBLEMS[i] for i in (problems if problems is not None else range(len(SCRIPTED_PROBLEMS)))]
    t0 = time.monotonic()
    path = build()  # progress on stderr the first time (about a minute on an idle machine)
    print(f"tiny Harmony model: {path} ({time.monotonic() - t0:.1f} s)", file=out)
    results = []
    for i, entry in enumerate(chosen):
        t = time.monotonic()
        # The same call as with a real model; the first one starts the engine (kept for the next calls).
        result = solve(entry.problem, model=str(path), engine_kwargs=engine_kwargs(), temperature=0.0, max_tokens=500)
        print(RULE, file=out)
        render(result, out)
        if i == 0:
            print(f"(first call, with the engine start: {time.monotonic() - t:.1f} s)", file=out)
        if result.answer != entry.answer:
            logger.warning("expected the answer %s, got %s", entry.answer, result.answer)
        results.append(result)
    print(RULE, file=out)
    print(f"{len(results)} problems in {time.monotonic() - t0:.1f} s", file=out)
    return results


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m harmony_agent.demo [--problem N ...]``; exit 1 if an answer is not the script's."""
    from .testing import SCRIPTED_PROBLEMS

    parser = argparse.ArgumentParser(prog="python -m harmony_agent.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--problem",
        type=int,
        action="append",
        choices=range(len(SCRIPTED_PROBLEMS)),
        help="index of a scripted problem (repeatable; default: all): "
        + "; ".join(f"{i}: {p.problem}" for i, p in enumerate(SCRIPTED_PROBLEMS)),
    )
    args = parser.parse_args(argv)
    # vLLM's start-up chatter on the CPU build (warnings about tokenizer-less warm-up, thread binding, ...)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if not logging.getLogger().handlers:  # our progress (model build, engine mode) at INFO, others' warnings
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("harmony_agent").setLevel(logging.INFO)
    results = run(sys.stdout, args.problem)
    chosen = args.problem if args.problem is not None else range(len(SCRIPTED_PROBLEMS))
    ok = all(r.answer == SCRIPTED_PROBLEMS[i].answer for r, i in zip(results, chosen))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
