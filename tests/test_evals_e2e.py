"""`harmony-eval` and `harmony-generate` end to end on the real vLLM engine with the tiny scripted model.

Each command runs in its own process, as a user runs it: it loads the model from its folder itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harmony_agent.testing import SCRIPTED_PROBLEMS

ENGINE_FLAGS = [
    "--max-model-len",
    "4096",
    "--kv-cache-memory-bytes",
    "256M",
    "--enforce-eager",
    "--engine-arg",
    "dtype=float32",
    "--tokens-to-generate",
    "300",
    "--no-progress",
]


ROOT = Path(__file__).resolve().parent.parent


def user_env(**extra: str) -> dict:
    """The environment of a user's shell: no logging or warning settings of ours (the CLI chooses them)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VLLM_LOGGING", "HARMONY_EVAL_QUIET"))
        and k not in ("PYTHONWARNINGS", "TORCH_CPP_LOG_LEVEL")
    }
    return {**env, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", **extra}


def run(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env=user_env(), timeout=timeout, cwd=ROOT
    )


def assert_clean_console(proc: subprocess.CompletedProcess, prog: str = "harmony-eval") -> None:
    """stdout holds only our results; stderr only our own lines (no vLLM log line, warning or traceback)."""
    for line in proc.stdout.splitlines():
        assert not any(
            noise in line
            for noise in ("INFO", "WARNING", "ERROR", "vllm", "Traceback", "Warning", "Loading safetensors")
        ), proc.stdout
    assert all(line.startswith(f"{prog}: ") for line in proc.stderr.splitlines()), proc.stderr


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def scripted_jsonl(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "scripted.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": f"s{i}", "problem": p.problem, "answer": p.answer}) + "\n"
            for i, p in enumerate(SCRIPTED_PROBLEMS)
        )
    )
    return path


def test_harmony_eval_on_aime24_and_a_jsonl_benchmark_in_one_run(tiny_model_path, scripted_jsonl, tmp_path):
    out = tmp_path / "run"
    args = [
        "aime24,jsonl:" + str(scripted_jsonl),
        "--num-samples",
        "2",
        "--limit",
        "2",
        "--model",
        str(tiny_model_path),
        "--output-dir",
        str(out),
        "--temperature",
        "0",
        "--reasoning-effort",
        "low",
        *ENGINE_FLAGS,
    ]
    proc = run("evals.cli", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_clean_console(proc)
    assert proc.stderr.splitlines()[0] == f"harmony-eval: loading {tiny_model_path} ..."
    assert "Chat template warmup failed" not in proc.stderr
    table = " ".join(proc.stdout.split())  # columns are padded to align
    for bench in ("aime24", "scripted"):
        assert f" {bench} " in table
    assert "evaluation_mode | num_entries | avg_tokens | gen_seconds | symbolic_correct | no_answer" in table
    for row in ("pass@1[avg-of-2] | 2 |", "majority@2 | 2 |", "pass@2 | 2 |", "pass@2 | 2 | "):
        assert row in table
    assert "pass@1[avg-of-2] | 2 | " in table and "100.00% | 0.00%" in table

    # the scripted problems are solved with real tool calls, in the published output layout
    lines = read_lines(out / "eval-results" / "scripted" / "output-rs0.jsonl")
    assert len(lines) == 2 and all(line["symbolic_correct"] for line in lines)
    assert all(line["code_rounds_executed"] >= 1 and line["finish_reason"] == "final" for line in lines)
    for key in (
        "generation",
        "predicted_answer",
        "num_generated_tokens",
        "num_tool_tokens",
        "num_code_timeouts",
        "code_execution_time",
        "generation_start_time",
        "generation_end_time",
    ):
        assert key in lines[0]
    metrics = json.loads((out / "eval-results" / "scripted" / "metrics.json").read_text())
    assert metrics["scripted"]["pass@1[avg-of-2]"]["symbolic_correct"] == 100.0

    # aime24: the tiny model has never seen these; every sample still ends cleanly and is recorded once
    for seed in (0, 1):
        aime = read_lines(out / "eval-results" / "aime24" / f"output-rs{seed}.jsonl")
        assert sorted(line["id"] for line in aime) == ["2024-I-1", "2024-I-2"]
        assert all(line["finish_reason"] in {"final", "length", "context", "max_tool_calls"} for line in aime)

    # the same command again finds every sample done: nothing is generated or duplicated
    before = {p: p.read_text() for p in out.rglob("output-rs*.jsonl")}
    again = run("evals.cli", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.read_text() for p in out.rglob("output-rs*.jsonl")} == before

    summary = run("evals.cli", "summarize", str(out))
    assert summary.returncode == 0 and "pass@1[avg-of-2] | 2 |" in " ".join(summary.stdout.split())

    # a saved real trajectory, rendered: the tool call with its code and output, then the answer
    line = lines[0]
    shown = run("evals.cli", "show", str(out), "--id", line["id"], "--seed", "0")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    call = next(m for m in line["messages"] if m["recipient"] == "python")
    reply = next(m for m in line["messages"] if m["role"] == "tool")
    assert "--- python call 1 · ok · " in text and call["text"].strip() in text and reply["text"].strip() in text
    assert f"answer {line['predicted_answer']} · correct (expected {line['expected_answer']})" in text
    assert text.index("python call 1") < text.index("--- final ---") and "<|" not in text
    listing = run("evals.cli", "show", str(out / "eval-results" / "scripted"))
    assert listing.returncode == 0 and len(listing.stdout.splitlines()) == 1 + 2 * 2  # --limit 2, 2 seeds


def test_harmony_generate_chunks_and_merge_on_the_real_engine(tiny_model_path, scripted_jsonl, tmp_path):
    out = tmp_path / "sdg"
    for chunk in ("0", "1"):
        proc = run(
            "evals.generate",
            "--input-file",
            str(scripted_jsonl),
            "--output-dir",
            str(out),
            "--prompt-template",
            "{problem}",
            "--answer-field",
            "answer",
            "--num-samples",
            "1",
            "--num-chunks",
            "2",
            "--chunk-id",
            chunk,
            "--model",
            str(tiny_model_path),
            "--temperature",
            "0",
            "--save-tokens",
            *ENGINE_FLAGS,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert_clean_console(proc, "harmony-generate")
    merged = run("evals.generate", "merge", str(out))
    assert merged.returncode == 0, merged.stderr[-3000:]
    assert sorted(p.name for p in (out / "chunks").iterdir()) == ["chunk-0-of-2", "chunk-1-of-2"]
    merged_lines = read_lines(out / "output-rs0.jsonl")
    assert sorted(line["id"] for line in merged_lines) == ["s0", "s1", "s2"]
    assert all(line["symbolic_correct"] for line in merged_lines)
    with_tokens = merged_lines[0]
    token_keys = [k for k in with_tokens if "token" in k or "mask" in k or "logprob" in k]
    assert token_keys, with_tokens.keys()


@pytest.mark.parametrize(
    "module,prog,flag,needle",
    [
        ("evals.cli", "harmony-eval", ["--temperature", "-1"], "argument --temperature: must be >= 0"),
        ("evals.cli", "harmony-eval", ["--top-p", "1.5"], "argument --top-p: must be in (0, 1]"),
        (
            "evals.cli",
            "harmony-eval",
            ["--code-timeout", "0"],
            "argument --code-timeout: must be seconds in (0, 86400]",
        ),
        ("evals.cli", "harmony-eval", ["--model", "./no/such"], "argument --model: './no/such': no such folder"),
        ("evals.cli", "harmony-eval", ["--dtype", "float8"], "argument --dtype: invalid choice: 'float8'"),
        ("evals.generate", "harmony-generate", ["--max-code-executions", "-1"], "argument --max-code-executions"),
        ("evals.generate", "harmony-generate", ["--tokens-to-generate", "0"], "argument --tokens-to-generate"),
    ],
)
def test_bad_flags_exit_2_at_once_without_loading_the_model(
    tiny_model_path, scripted_jsonl, tmp_path, module, prog, flag, needle
):
    import time

    inputs = ["jsonl:" + str(scripted_jsonl)] if module == "evals.cli" else ["--input-file", str(scripted_jsonl)]
    start = time.monotonic()
    proc = run(
        module, *inputs, "--model", str(tiny_model_path), "--output-dir", str(tmp_path / "o"), *ENGINE_FLAGS, *flag
    )
    took = time.monotonic() - start
    assert proc.returncode == 2 and proc.stdout == ""
    [line] = proc.stderr.splitlines()  # one line, no "loading ..." before it
    assert line.startswith(f"{prog}: error: ") and needle in line, line
    assert took < 60, took  # the model never loads (a load takes minutes on this machine under load)
    assert not (tmp_path / "o").exists()


def test_ctrl_c_ends_with_one_line_and_130_then_resume(tiny_model_path, scripted_jsonl, tmp_path):
    """A Ctrl-C at the terminal (SIGINT to the whole process group, vLLM's engine processes included: the
    default multiprocessing engine) ends with our one line and exit code 130, nothing of vLLM's; finished samples
    stay and the same command resumes."""
    import signal
    import time

    out = tmp_path / "run"
    # greedy: seeded sampling trips a bug of vLLM's CPU build in multiprocessing mode ("CPU Generator does not
    # use offset"); 16 at a time, so that most samples are still to come when the first ones are written
    args = [
        "aime24:8",
        "--limit",
        "30",
        "--model",
        str(tiny_model_path),
        "--output-dir",
        str(out),
        "--temperature",
        "0",
        "--max-concurrent",
        "16",
        *ENGINE_FLAGS,
    ]
    env = user_env()
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING")
    err = tmp_path / "err"
    with open(err, "w") as stderr, open(tmp_path / "out", "w") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "evals.cli", *args],
            stdout=stdout,
            stderr=stderr,
            env=env,
            cwd=ROOT,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        folder = out / "eval-results" / "aime24"
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and proc.poll() is None:
            if folder.is_dir() and any(p.stat().st_size for p in folder.glob("output-rs*.jsonl")):
                break
            time.sleep(0.2)
        assert proc.poll() is None, err.read_text()
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(300) == 130
    lines = err.read_text().splitlines()
    assert lines[-1] == "harmony-eval: interrupted; finished samples are saved, run the same command to resume"
    assert all(line.startswith("harmony-eval: ") for line in lines), err.read_text()
    assert (tmp_path / "out").read_text() == ""
    done = sum(len(read_lines(p)) for p in folder.glob("output-rs*.jsonl"))
    assert 1 <= done < 8 * 30
