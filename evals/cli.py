"""harmony-eval: ``harmony-eval aime24:16,aime25:16 --model openai/gpt-oss-120b`` and ``harmony-eval summarize DIR``.

Bad input ends with one line on stderr naming the problem and the fix, and exit code 2; samples already
written stay on disk. ``main(argv, agent_factory=...)`` lets tests swap the agent.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from evals.errors import EvalError, one_line, user_error_types
from evals.output import SampleStore, seed_files, write_json_atomic
from evals.report import format_report
from evals.runner import AIME_PROMPT, benchmark_metrics, eval_results_dir, run_eval

__all__ = ["main", "build_parser", "add_agent_arguments", "agent_options", "summarize", "run_cli"]


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one EvalError line (exit code 2 through `run_cli`)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise EvalError(f"{message}; see {self.prog} --help")


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """``"8G"``, ``"256MiB"``, ``"1073741824"`` -> bytes (binary units)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; write e.g. 8G, 256M or a byte count")
    unit = (m.group(2) or "B")[0].upper()
    return int(float(m.group(1)) * {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[unit])


def _engine_arg(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: write KEY=VALUE, e.g. distributed_executor_backend=ray")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def add_agent_arguments(p: argparse.ArgumentParser) -> None:
    """Model, sampling, tool and engine flags (the published run's defaults), shared by both CLIs."""
    g = p.add_argument_group("model and sampling")
    g.add_argument("--model", help="hub id or local folder, e.g. openai/gpt-oss-120b (required to generate)")
    g.add_argument("--tokens-to-generate", type=int, default=120000, help="max generated tokens per sample")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--reasoning-effort", choices=["low", "medium", "high"], default="high")
    g.add_argument("--seed", type=int, default=0, help="sample j of n uses seed SEED+j (files output-rsSEED+j)")
    t = p.add_argument_group("python tool")
    t.add_argument("--python", action=argparse.BooleanOptionalAction, default=True,
                   help="Python as a builtin tool (default on)")
    t.add_argument("--max-code-executions", type=int, default=100, help="tool calls allowed per sample")
    t.add_argument("--code-timeout", type=float, default=10.0, help="seconds per code cell")
    t.add_argument("--max-code-output-chars", type=int, default=1000, help="tool output kept per call")
    e = p.add_argument_group("engine (vLLM)")
    e.add_argument("--tensor-parallel-size", type=int)
    e.add_argument("--max-model-len", type=int)
    e.add_argument("--gpu-memory-utilization", type=float)
    e.add_argument("--enforce-eager", action="store_true", default=None)
    e.add_argument("--kv-cache-memory-bytes", type=parse_bytes, help="explicit KV cache size (needed on CPU), e.g. 8G")
    e.add_argument("--max-concurrent", type=int, help="trajectories in flight at once (default: the agent's, 256)")
    e.add_argument("--engine-arg", type=_engine_arg, action="append", default=[], metavar="KEY=VALUE",
                   help="any other vllm.LLM argument (VALUE parsed as JSON when it is JSON); repeatable")
    o = p.add_argument_group("output")
    o.add_argument("--save-tokens", action="store_true", help="also store token ids, loss mask and logprobs")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    o.add_argument("--limit", type=int, help="only the first N problems")


def agent_options(args: argparse.Namespace) -> dict[str, Any]:
    """`run_eval`-style keyword arguments from the shared flags."""
    engine: dict[str, Any] = {}
    for name in ("tensor_parallel_size", "max_model_len", "gpu_memory_utilization", "enforce_eager",
                 "kv_cache_memory_bytes"):
        value = getattr(args, name)
        if value is not None:
            engine[name] = value
    engine.update(dict(args.engine_arg))
    return {
        "model": args.model,
        "python": args.python,
        "reasoning_effort": args.reasoning_effort,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "tokens_to_generate": args.tokens_to_generate,
        "max_code_executions": args.max_code_executions,
        "code_timeout": args.code_timeout,
        "max_code_output_chars": args.max_code_output_chars,
        "engine_kwargs": engine,
        "max_concurrent": args.max_concurrent,
        "save_tokens": args.save_tokens,
        "progress": False if args.no_progress else None,
        "seed": args.seed,
        "limit": args.limit,
    }


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="harmony-eval", description="Evaluate gpt-oss (+ Python) on AIME24/AIME25 or a JSONL file; "
                "resumable. `harmony-eval summarize DIR` recomputes the tables from the files.")
    p.add_argument("benchmarks", nargs="?", default="",
                   help="comma-separated NAME[:SAMPLES]: aime24, aime25, jsonl:PATH (e.g. aime24:16,aime25:16)")
    p.add_argument("--num-samples", type=int, default=16, help="samples per problem for a bare benchmark name")
    p.add_argument("--output-dir", default="results", help="results go to OUTPUT_DIR/eval-results/<bench>/")
    p.add_argument("--all-k", action="store_true",
                   help="print rows for every k (metrics.json always has them), not only the published ones")
    d = p.add_argument_group("data")
    d.add_argument("--data-dir", help="folder with <bench>.jsonl (default: $HARMONY_EVAL_DATA, else the hub)")
    d.add_argument("--input-file", help="a JSONL benchmark of your own (named after the file)")
    d.add_argument("--problem-field", default="problem")
    d.add_argument("--answer-field", default="answer")
    d.add_argument("--id-field", default="id", help="unique id field (missing: the line's position)")
    d.add_argument("--prompt-template", default=AIME_PROMPT,
                   help="user message, str.format over the record's fields (default: the published AIME prompt)")
    add_agent_arguments(p)
    return p


def summarize(output_dir: str | Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Recompute every benchmark's metrics from its output files, rewrite metrics.json, return them."""
    base = Path(output_dir)
    root = eval_results_dir(base) if eval_results_dir(base).is_dir() else base
    benches = sorted(d for d in root.iterdir() if d.is_dir() and seed_files(d)) if root.is_dir() else []
    if not benches:
        raise EvalError(f"no output-rs*.jsonl files under {root}; give the --output-dir of a harmony-eval run")
    metrics: dict[str, dict[str, dict[str, Any]]] = {}
    for d in benches:
        modes = benchmark_metrics(SampleStore(d))
        write_json_atomic(d / "metrics.json", {d.name: modes})
        metrics[d.name] = modes
    return metrics


def run_cli(prog: str, body: Callable[[], int]) -> int:
    """Run a CLI body: user errors -> one line + exit 2; Ctrl-C -> 130 with a resume hint."""
    try:
        return body()
    except user_error_types() as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished samples are saved, run the same command to resume", file=sys.stderr)
        return 130
    except SystemExit as e:  # --help
        return int(e.code or 0) if isinstance(e.code, int) or e.code is None else 2


def main(argv: Optional[Sequence[str]] = None, agent_factory: Optional[Callable[..., Any]] = None) -> int:
    """Entry point of ``harmony-eval``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)

    def body() -> int:
        if argv[:1] == ["summarize"]:
            sp = _Parser(prog="harmony-eval summarize", description="Recompute metrics from the output files.")
            sp.add_argument("output_dir")
            sp.add_argument("--all-k", action="store_true", help="rows for every k, not only the published ones")
            sargs = sp.parse_args(argv[1:])
            print(format_report(summarize(sargs.output_dir), full=sargs.all_k))
            return 0
        args = build_parser().parse_args(argv)
        metrics = run_eval(
            args.benchmarks, output_dir=args.output_dir, num_samples=args.num_samples, data_dir=args.data_dir,
            input_file=args.input_file, problem_field=args.problem_field, answer_field=args.answer_field,
            id_field=args.id_field, prompt_template=args.prompt_template, agent_factory=agent_factory,
            **agent_options(args),
        )
        print(format_report(metrics, full=args.all_k))
        for bench in metrics:
            print(f"metrics: {eval_results_dir(args.output_dir) / bench / 'metrics.json'}")
        return 0

    return run_cli("harmony-eval", body)


if __name__ == "__main__":
    sys.exit(main())
