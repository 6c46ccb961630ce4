"""harmony-eval: ``harmony-eval aime24:16,aime25:16 --model openai/gpt-oss-120b``, ``harmony-eval summarize DIR``,
``harmony-eval show DIR [--id ID --seed S]``.

Every flag is checked before anything loads; bad input ends with one line on stderr naming the flag or the
problem and the fix, and exit code 2; samples already written stay on disk. stdout carries only results.
``main(argv, agent_factory=...)`` lets tests swap the agent.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from evals.config import AIME_PROMPT, EvalConfig
from evals.console import run_cli, setup_console
from evals.errors import EvalError
from evals.evaluate import eval_results_dir, run_eval
from evals.metrics import MAJORITY_MODES
from evals.report import format_report
from evals.summarize import summarize
from harmony_agent import config as agent_config
from harmony_agent.config import LoopConfig, PromptConfig, Sampling

__all__ = ["main", "build_parser", "add_run_arguments", "config_from_args", "Parser", "summarize"]

DTYPES = ("auto", "bfloat16", "float16", "float32")
SUBCOMMANDS = """subcommands:
  harmony-eval summarize DIR [--all-k]          recompute metrics.json and the tables from the output files
  harmony-eval show DIR [--id ID] [--seed S]    render one saved sample (lists the samples without --id)
"""


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one EvalError line (exit code 2), with defaults shown in --help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise EvalError(f"{message}; see {self.prog} --help")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            default is None
            or default is False
            or default == []
            or default == ""
            or default == argparse.SUPPRESS
            or "%(default)" in text
            or "default:" in text
        ):
            return text
        return text + " (default: %(default)s)"


# ------------------------------------------------------------------------------------------------ flag checks

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """``"8G"``, ``"256MiB"``, ``"1073741824"`` -> bytes (binary units); must be > 0."""
    m = _SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; write e.g. 8G, 256M or a byte count")
    unit = (m.group(2) or "B")[0].upper()
    value = int(float(m.group(1)) * {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[unit])
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive size")
    return value


def _number(kind: type, text: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None


def checked(owner: type, field: str, kind: type) -> Callable[[str], Any]:
    """An argparse type: `kind` parsed, then validated by the configuration object that owns `field` (so the
    rule is defined once, in harmony_agent.config); the message speaks of the flag, not the API name."""

    def parse(text: str) -> Any:
        value = _number(kind, text)
        try:
            owner(**{field: value})
        except ValueError as e:
            message = str(e)
            raise argparse.ArgumentTypeError(
                message[len(field) :].strip() if message.startswith(field) else message
            ) from None
        return value

    return parse


def at_least(low: int | float, kind: type = int, high: float | None = None) -> Callable[[str], Any]:
    """An argparse type for a number in [low, high]."""

    def parse(text: str) -> Any:
        value = _number(kind, text)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"must be {'in' if high is not None else '>='} "
                f"{f'[{low}, {high}]' if high is not None else low}, got {text}"
            )
        return value

    return parse


def model_argument(text: str) -> str:
    """A hub name (``org/name``) or a local model folder; a path that does not exist fails here, at once, instead
    of after vLLM has tried the hub for it."""
    name = text.strip()
    if not name:
        raise argparse.ArgumentTypeError("empty; give a hub name like openai/gpt-oss-120b or a local folder")
    local = Path(os.path.expanduser(name))
    path_like = name.startswith(("/", "./", "../", "~", ".")) or name.count("/") > 1 or name.endswith("/")
    if local.exists():
        if not local.is_dir() or not (local / "config.json").is_file():
            raise argparse.ArgumentTypeError(f"{name!r} is not a model folder (no config.json in it)")
        return str(local) if name.startswith("~") else name
    if path_like:
        raise argparse.ArgumentTypeError(
            f"{name!r}: no such folder; give an existing local model folder or a hub name like openai/gpt-oss-120b"
        )
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") and not _in_hub_cache(name):
        raise argparse.ArgumentTypeError(
            f"{name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is "
            "set; download it first or give a local folder"
        )
    return name


def _in_hub_cache(name: str) -> bool:
    """Whether the hub model `name` has its config.json in the local Hugging Face cache (unknown: assume so)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return True
    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # an invalid repo id: let vLLM say what is wrong with it
        return True


def _engine_arg(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: write KEY=VALUE, e.g. distributed_executor_backend=ray")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


# ------------------------------------------------------------------------------------------------ shared flags


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Model, sampling, tool, engine and output flags (defaults: the published run's), shared by both CLIs."""
    g = p.add_argument_group("model and sampling")
    g.add_argument(
        "--model", type=model_argument, help="hub name or local folder, e.g. openai/gpt-oss-120b (required to generate)"
    )
    g.add_argument(
        "--tokens-to-generate",
        type=checked(LoopConfig, "max_tokens", int),
        default=agent_config.DEFAULT_MAX_TOKENS,
        help="max generated tokens per sample",
    )
    g.add_argument(
        "--temperature",
        type=checked(Sampling, "temperature", float),
        default=agent_config.DEFAULT_TEMPERATURE,
        help="0 is greedy",
    )
    g.add_argument(
        "--top-p", type=checked(Sampling, "top_p", float), default=agent_config.DEFAULT_TOP_P, help="nucleus sampling"
    )
    g.add_argument(
        "--top-k", type=checked(Sampling, "top_k", int), default=agent_config.DEFAULT_TOP_K, help="-1 is off"
    )
    g.add_argument(
        "--reasoning-effort",
        choices=agent_config.REASONING_EFFORTS,
        default=agent_config.DEFAULT_REASONING_EFFORT,
        help="in the system message",
    )
    g.add_argument("--seed", type=at_least(0), default=0, help="sample j of n uses seed SEED+j (file output-rsSEED+j)")
    t = p.add_argument_group("python tool")
    t.add_argument("--python", action=argparse.BooleanOptionalAction, default=True, help="Python as a builtin tool")
    t.add_argument(
        "--max-code-executions",
        type=checked(LoopConfig, "max_tool_calls", int),
        default=agent_config.DEFAULT_MAX_TOOL_CALLS,
        help="tool calls allowed per sample",
    )
    t.add_argument(
        "--code-timeout",
        type=checked(LoopConfig, "tool_timeout", float),
        default=agent_config.DEFAULT_TOOL_TIMEOUT,
        help="seconds per code cell",
    )
    t.add_argument(
        "--max-code-output-chars",
        type=checked(LoopConfig, "max_output_chars", int),
        default=agent_config.DEFAULT_MAX_OUTPUT_CHARS,
        help="tool output kept per call",
    )
    e = p.add_argument_group("engine (vLLM)")
    e.add_argument("--dtype", choices=DTYPES, help="weights and activations (default: vLLM's choice)")
    e.add_argument("--tensor-parallel-size", type=at_least(1), help="GPUs per engine")
    e.add_argument("--max-model-len", type=at_least(1), help="context length (default: the model's)")
    e.add_argument(
        "--gpu-memory-utilization",
        type=at_least(0.01, float, 1.0),
        help="share of GPU memory vLLM may take (default: vLLM's)",
    )
    e.add_argument("--enforce-eager", action="store_true", default=None, help="no CUDA graphs")
    e.add_argument("--kv-cache-memory-bytes", type=parse_bytes, help="explicit KV cache size (needed on CPU), e.g. 8G")
    e.add_argument(
        "--max-concurrent",
        type=checked(LoopConfig, "max_concurrent", int),
        default=agent_config.DEFAULT_MAX_CONCURRENT,
        help="trajectories in flight at once",
    )
    e.add_argument(
        "--engine-arg",
        type=_engine_arg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other vllm.LLM argument (VALUE parsed as JSON when it is JSON); repeatable",
    )
    o = p.add_argument_group("output and console")
    o.add_argument("--save-tokens", action="store_true", help="also store token ids, loss mask and logprobs")
    o.add_argument("--limit", type=at_least(1), help="only the first N problems")
    o.add_argument("--no-progress", action="store_true", help="no progress bar (shown when stderr is a terminal)")
    o.add_argument("--verbose", action="store_true", help="show vLLM's own log lines (on stderr)")


def engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``vllm.LLM`` arguments from the engine flags; statistics on (the progress line reads its token count),
    weight-loading bars only with --verbose."""
    kwargs: dict[str, Any] = {"disable_log_stats": False, "use_tqdm_on_load": bool(args.verbose)}
    for name in (
        "dtype",
        "tensor_parallel_size",
        "max_model_len",
        "gpu_memory_utilization",
        "enforce_eager",
        "kv_cache_memory_bytes",
    ):
        value = getattr(args, name)
        if value is not None:
            kwargs[name] = value
    kwargs.update(dict(args.engine_arg))
    return kwargs


def config_from_args(args: argparse.Namespace, **extra: Any) -> EvalConfig:
    """The run's `EvalConfig` from the shared flags plus `extra` fields."""
    try:
        return EvalConfig(
            model=args.model,
            engine_kwargs=engine_kwargs(args),
            prompt=PromptConfig(reasoning_effort=args.reasoning_effort, python=args.python),
            sampling=Sampling(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k),
            loop=LoopConfig(
                max_tokens=args.tokens_to_generate,
                max_tool_calls=args.max_code_executions,
                tool_timeout=args.code_timeout,
                max_output_chars=args.max_code_output_chars,
                max_concurrent=args.max_concurrent,
            ),
            seed=args.seed,
            limit=args.limit,
            save_tokens=args.save_tokens,
            progress=False if args.no_progress else None,
            **extra,
        )
    except ValueError as e:
        raise EvalError(f"{e}; see --help") from None


# ------------------------------------------------------------------------------------------------ harmony-eval


def build_parser() -> Parser:
    p = Parser(
        prog="harmony-eval",
        epilog=SUBCOMMANDS,
        description="Evaluate gpt-oss (+ Python) on AIME24/AIME25 or a JSONL file, resumably, with "
        "NeMo-Skills' metrics and output layout. Results (tables) go to stdout, everything else to stderr.",
    )
    p.add_argument(
        "benchmarks",
        nargs="?",
        default="",
        help="comma-separated NAME[:SAMPLES]: aime24, aime25, jsonl:PATH (e.g. aime24:16,aime25:16)",
    )
    p.add_argument("--num-samples", type=at_least(1), default=16, help="samples per problem for a bare name")
    p.add_argument("--output-dir", default="results", help="results go to OUTPUT_DIR/eval-results/<bench>/")
    p.add_argument(
        "--all-k",
        action="store_true",
        help="print rows for every k (metrics.json always has them), not only the published ones",
    )
    p.add_argument(
        "--majority",
        choices=MAJORITY_MODES,
        default="normalized",
        help="majority@k groups normalized answers (204 = 0204) or raw strings (NeMo-Skills)",
    )
    d = p.add_argument_group("data")
    d.add_argument("--data-dir", help="folder with <bench>.jsonl (default: $HARMONY_EVAL_DATA, else the hub)")
    d.add_argument("--input-file", help="a JSONL benchmark of your own (named after the file)")
    d.add_argument("--problem-field", default="problem", help="field holding the problem text")
    d.add_argument("--answer-field", default="answer", help="field holding the reference answer")
    d.add_argument("--id-field", default="id", help="unique id field (missing: the line's position)")
    d.add_argument(
        "--prompt-template",
        default=AIME_PROMPT,
        help="user message, str.format over the record's fields (default: the published AIME prompt)",
    )
    add_run_arguments(p)
    return p


def _summarize(argv: list[str]) -> int:
    sp = Parser(
        prog="harmony-eval summarize",
        description="Recompute metrics.json and the tables from the output "
        "files of an output dir, its eval-results folder, or one benchmark folder.",
    )
    sp.add_argument("path", help="output dir, eval-results folder or benchmark folder")
    sp.add_argument("--all-k", action="store_true", help="rows for every k, not only the published ones")
    sp.add_argument("--majority", choices=MAJORITY_MODES, default="normalized", help="answer grouping for majority@k")
    a = sp.parse_args(argv)
    print(format_report(summarize(a.path, majority=a.majority), full=a.all_k))
    return 0


def main(argv: Sequence[str] | None = None, agent_factory: Callable[..., Any] | None = None) -> int:
    """Entry point of ``harmony-eval``; returns the exit code."""
    console = argv is None
    args_list = list(sys.argv[1:] if argv is None else argv)
    setup_console("harmony-eval", verbose="--verbose" in args_list)

    def body() -> int:
        if args_list[:1] == ["summarize"]:
            return _summarize(args_list[1:])
        if args_list[:1] == ["show"]:
            from evals.show import main as show_main

            return show_main(args_list[1:])
        args = build_parser().parse_args(args_list)
        config = config_from_args(
            args,
            output_dir=args.output_dir,
            num_samples=args.num_samples,
            data_dir=args.data_dir,
            problem_field=args.problem_field,
            answer_field=args.answer_field,
            id_field=args.id_field,
            prompt_template=args.prompt_template,
            majority=args.majority,
        )
        metrics = run_eval(args.benchmarks, config, input_file=args.input_file, agent_factory=agent_factory)
        print(format_report(metrics, full=args.all_k))
        for bench in metrics:
            print(f"metrics: {eval_results_dir(args.output_dir) / bench / 'metrics.json'}")
        return 0

    return run_cli("harmony-eval", body, quiet_exit=console)


if __name__ == "__main__":
    sys.exit(main())
