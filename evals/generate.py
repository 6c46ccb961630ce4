"""harmony-generate: synthetic data with the same agent, knobs and resumable output as harmony-eval.

``harmony-generate --input-file problems.jsonl --output-dir DIR`` writes ``DIR/output-rs<seed>.jsonl``.
``--num-chunks N --chunk-id I`` takes the I-th of N contiguous slices of the input (one per machine, e.g.
a Slurm array task) and writes ``DIR/chunks/chunk-I-of-N/``; ``harmony-generate merge DIR`` joins finished
chunks into ``DIR/output-rs<seed>.jsonl`` in input order.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from evals.cli import Parser, add_run_arguments, at_least, config_from_args
from evals.config import AIME_PROMPT, EvalConfig
from evals.console import run_cli, setup_console
from evals.data import normalize_records, read_jsonl_rows
from evals.errors import EvalError
from evals.output import SampleStore, read_records, seed_files, write_json_atomic
from evals.runner import AgentFactory, Job, render_prompt, run_jobs

__all__ = ["generate", "merge_chunks", "chunk_dir", "main", "GENERATE_DEFAULTS"]

_CHUNK_RE = re.compile(r"^chunk-(\d+)-of-(\d+)$")
MANIFEST = "manifest.json"
GENERATE_DEFAULTS: dict[str, Any] = {"num_samples": 1, "answer_field": None}
"""Where harmony-generate's defaults differ from harmony-eval's: one sample per record, no grading."""


def chunk_dir(output_dir: str | Path, chunk_id: int, num_chunks: int) -> Path:
    """Folder of one chunk: ``DIR/chunks/chunk-<I>-of-<N>``."""
    return Path(output_dir) / "chunks" / f"chunk-{chunk_id}-of-{num_chunks}"


def _chunk_slice(count: int, chunk_id: int, num_chunks: int) -> slice:
    return slice(chunk_id * count // num_chunks, (chunk_id + 1) * count // num_chunks)


def generate(
    input_file: str | Path,
    output_dir: str | Path,
    config: EvalConfig | None = None,
    *,
    num_chunks: int = 1,
    chunk_id: int = 0,
    agent: Any = None,
    agent_factory: AgentFactory | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Generate ``num_samples`` samples per input record (this chunk's share); resumes what is on disk.

    Settings come from `config` and/or keyword `overrides` as for ``run_eval`` (defaults: `GENERATE_DEFAULTS`
    over `EvalConfig`'s). Each output line is the input record plus ``id``, ``prompt``, ``seed`` and the fields
    harmony-eval writes; with ``answer_field`` the answer is graded too (``symbolic_correct``). Returns a summary.
    """
    if num_chunks < 1 or not 0 <= chunk_id < num_chunks:
        raise EvalError(f"--chunk-id {chunk_id} with --num-chunks {num_chunks}: need 0 <= chunk-id < num-chunks")
    config = EvalConfig.create(config or EvalConfig(**GENERATE_DEFAULTS), output_dir=str(output_dir), **overrides)
    records = normalize_records(
        read_jsonl_rows(input_file),
        source=str(input_file),
        problem_field=None,
        answer_field=config.answer_field,
        id_field=config.id_field,
    )
    if config.limit is not None:
        records = records[: config.limit]
    records = records[_chunk_slice(len(records), chunk_id, num_chunks)]
    records = [
        {**r, "prompt": render_prompt(config.prompt_template, r, f"{input_file} record {r['id']!r}")} for r in records
    ]
    seeds = list(range(config.seed, config.seed + config.num_samples))
    folder = Path(output_dir) if num_chunks == 1 else chunk_dir(output_dir, chunk_id, num_chunks)
    manifest = {
        "input_file": str(Path(input_file).resolve()),
        "num_chunks": num_chunks,
        "chunk_id": chunk_id,
        "seeds": seeds,
        "ids": [r["id"] for r in records],
    }
    if num_chunks > 1:
        _check_manifest(folder, manifest)
        if not (folder / MANIFEST).exists():
            write_json_atomic(folder / MANIFEST, manifest)
    job = Job(f"generate {folder.name}", SampleStore(folder), records, {r["id"]: r["prompt"] for r in records}, seeds)
    generated = run_jobs([job], config, title=job.label, agent=agent, agent_factory=agent_factory)
    return {
        "output_dir": str(folder),
        "records": len(records),
        "samples": len(records) * len(seeds),
        "generated": generated,
    }


def _check_manifest(folder: Path, manifest: Mapping[str, Any]) -> None:
    path = folder / MANIFEST
    if not path.exists():
        return
    stored = _read_manifest(path)
    for key in ("ids", "seeds"):
        if stored.get(key) != manifest[key]:
            raise EvalError(
                f"{folder} was made from another input or --seed/--num-samples/--limit ({key} differ); "
                "use another --output-dir or the original settings"
            )


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise EvalError(f"{path}: unreadable manifest ({e}); rerun that chunk") from None
    return data


def merge_chunks(output_dir: str | Path, *, allow_incomplete: bool = False) -> dict[str, Any]:
    """Join ``DIR/chunks/chunk-*-of-N`` into ``DIR/output-rs<seed>.jsonl`` (input order, one line per sample).

    Refuses (EvalError listing what is missing) unless every chunk is complete or `allow_incomplete`.
    """
    base = Path(output_dir)
    found: dict[int, dict[int, Path]] = {}
    root = base / "chunks"
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        m = _CHUNK_RE.match(d.name)
        if m and d.is_dir():
            found.setdefault(int(m.group(2)), {})[int(m.group(1))] = d
    if not found:
        raise EvalError(f"no chunk folders under {root}; run harmony-generate with --num-chunks first")
    if len(found) > 1:
        raise EvalError(
            f"{root} mixes chunkings ({', '.join(f'of-{n}' for n in sorted(found))}); "
            "keep one --num-chunks per output dir"
        )
    ((num_chunks, chunks),) = found.items()
    problems: list[str] = []
    per_seed: dict[int, list[dict]] = {}
    for cid in range(num_chunks):
        found_dir = chunks.get(cid)
        if found_dir is None or not (found_dir / MANIFEST).exists():
            problems.append(f"chunk {cid} not started")
            continue
        d = found_dir
        man = _read_manifest(d / MANIFEST)
        missing = 0
        for s in man["seeds"]:
            by_id: dict[str, dict] = {}
            for rec in read_records(d / f"output-rs{s}.jsonl"):
                by_id.setdefault(str(rec.get("id")), rec)
            for rid in man["ids"]:
                if rid in by_id:
                    per_seed.setdefault(int(s), []).append(by_id[rid])
                else:
                    missing += 1
        if missing:
            problems.append(f"chunk {cid} lacks {missing} of {len(man['ids']) * len(man['seeds'])} samples")
    if problems and not allow_incomplete:
        raise EvalError(
            f"cannot merge {base}: {'; '.join(problems)}; run the missing chunks (same command) "
            "or pass --allow-incomplete"
        )
    for s, stale in seed_files(base).items():  # a previous merge with more seeds must not linger
        if s not in per_seed:
            os.remove(stale)
    for s, recs in sorted(per_seed.items()):
        _write_jsonl_atomic(base / f"output-rs{s}.jsonl", recs)
    return {
        "num_chunks": num_chunks,
        "seeds": sorted(per_seed),
        "samples": sum(map(len, per_seed.values())),
        "incomplete": problems,
    }


def _write_jsonl_atomic(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def build_parser() -> Parser:
    p = Parser(
        prog="harmony-generate",
        epilog="subcommands:\n  harmony-generate merge DIR [--allow-incomplete]   "
        "join the chunks of --num-chunks runs into DIR/output-rs<seed>.jsonl\n",
        description="Generate samples (synthetic data) for a JSONL input with the harmony-eval agent; "
        "resumable. Everything but the final summary line goes to stderr.",
    )
    p.add_argument("--input-file", required=True, help="JSONL, one record per line")
    p.add_argument("--output-dir", required=True)
    tg = p.add_mutually_exclusive_group()
    tg.add_argument(
        "--prompt-template",
        help="user message: str.format over the record's fields, used verbatim "
        "(no escape processing); default: the AIME prompt over {problem}",
    )
    tg.add_argument("--prompt-template-file", help="read the template from this file")
    p.add_argument("--id-field", default="id", help="unique id field (missing: the line's position)")
    p.add_argument("--answer-field", help="grade against this field (adds symbolic_correct)")
    p.add_argument(
        "--num-samples",
        type=at_least(1),
        default=GENERATE_DEFAULTS["num_samples"],
        help="samples per record (seeds SEED..SEED+N-1)",
    )
    p.add_argument("--num-chunks", type=at_least(1), default=1, help="split the input into N contiguous chunks")
    p.add_argument("--chunk-id", type=at_least(0), default=0, help="which chunk this process does (0..N-1)")
    add_run_arguments(p)
    return p


def main(argv: Sequence[str] | None = None, agent_factory: Callable[..., Any] | None = None) -> int:
    """Entry point of ``harmony-generate``; returns the exit code."""
    console = argv is None
    args_list = list(sys.argv[1:] if argv is None else argv)
    setup_console("harmony-generate", verbose="--verbose" in args_list)

    def body() -> int:
        if args_list[:1] == ["merge"]:
            mp = Parser(prog="harmony-generate merge", description="Join finished chunks in input order.")
            mp.add_argument("output_dir")
            mp.add_argument("--allow-incomplete", action="store_true", help="merge what is there")
            a = mp.parse_args(args_list[1:])
            info = merge_chunks(a.output_dir, allow_incomplete=a.allow_incomplete)
            print(
                f"merged {info['num_chunks']} chunks: {info['samples']} samples into "
                f"{a.output_dir}/output-rs{{{','.join(map(str, info['seeds']))}}}.jsonl"
            )
            for note in info["incomplete"]:
                print(f"harmony-generate: warning: {note}", file=sys.stderr)
            return 0
        args = build_parser().parse_args(args_list)
        template = args.prompt_template
        if args.prompt_template_file:
            try:
                template = Path(args.prompt_template_file).read_text(encoding="utf-8").removesuffix("\n")
            except OSError as e:
                raise EvalError(
                    f"cannot read --prompt-template-file {args.prompt_template_file!r}: {e.strerror}"
                ) from None
        config = config_from_args(
            args,
            output_dir=args.output_dir,
            prompt_template=template or AIME_PROMPT,
            id_field=args.id_field,
            answer_field=args.answer_field,
            num_samples=args.num_samples,
        )
        info = generate(
            args.input_file,
            args.output_dir,
            config,
            num_chunks=args.num_chunks,
            chunk_id=args.chunk_id,
            agent_factory=agent_factory,
        )
        print(f"{info['samples']} samples ({info['generated']} generated now) in {info['output_dir']}")
        return 0

    return run_cli("harmony-generate", body, quiet_exit=console)


if __name__ == "__main__":
    sys.exit(main())
