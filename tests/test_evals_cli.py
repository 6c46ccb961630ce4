"""harmony-eval end to end with a fake agent (and the real Agent over a scripted engine): output files,
metrics, resume (also after SIGKILL), summarize, and every bad input -> one line + exit code 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from evals.cli import main
from evals.evaluate import run_eval
from evals.metrics import compute_metrics
from evals.output import read_records

from .evals_fake_agent import FakeFactory, outcome

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {
    "id",
    "problem",
    "answer",
    "expected_answer",
    "seed",
    "generation",
    "predicted_answer",
    "symbolic_correct",
    "num_generated_tokens",
    "num_tool_tokens",
    "code_rounds_executed",
    "num_code_timeouts",
    "code_execution_time",
    "finish_reason",
    "generation_start_time",
    "generation_end_time",
    "error",
    "messages",
    "tool_calls",
}


def run(argv, factory=None, capsys=None):
    code = main([*argv, "--no-progress"] if argv[:1] != ["summarize"] else argv, agent_factory=factory)
    out = capsys.readouterr() if capsys is not None else None
    return code, out


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_end_to_end_files_metrics_and_one_stream(tmp_path, capsys):
    f = FakeFactory()
    code, out = run(
        ["aime24:4,aime25:2", "--model", "fake/model", "--output-dir", str(tmp_path), "--limit", "3"], f, capsys
    )
    assert code == 0, out.err
    # one agent, one stream over every sample of every benchmark
    assert len(f.agents) == 1 and f.agents[0].closed
    assert len(f.received) == 3 * 4 + 3 * 2
    assert type(f.received[0]).__module__.startswith("harmony_agent")
    assert {t.seed for t in f.received} == {0, 1, 2, 3}
    assert f.received[0].problem.endswith("\nPlease reason step by step, and put your final answer within \\boxed{}.")
    kw = f.calls[0]
    assert (
        kw["model"],
        kw["python"],
        kw["reasoning_effort"],
        kw["temperature"],
        kw["top_p"],
        kw["max_tokens"],
        kw["max_tool_calls"],
        kw["tool_timeout"],
        kw["max_output_chars"],
        kw["engine_kwargs"],
    ) == (
        "fake/model",
        True,
        "high",
        1.0,
        1.0,
        120000,
        100,
        10.0,
        1000,
        {"disable_log_stats": False, "use_tqdm_on_load": False},
    )
    assert kw["logprobs"] is False  # not saved, so not asked of the engine
    res = tmp_path / "eval-results"
    for bench, n in (("aime24", 4), ("aime25", 2)):
        files = sorted(p.name for p in (res / bench).glob("output-rs*.jsonl"))
        assert files == [f"output-rs{s}.jsonl" for s in range(n)]
        for s in range(n):
            recs = lines(res / bench / f"output-rs{s}.jsonl")
            assert len(recs) == 3 and set(recs[0]) == FIELDS
            for r in recs:
                kind = outcome(r["problem"], s)
                assert r["seed"] == s
                assert r["symbolic_correct"] == (kind == "right")
                assert (r["predicted_answer"] is None) == (kind == "none")
                assert r["code_rounds_executed"] == 2 and r["num_code_timeouts"] == 1
                assert r["code_execution_time"] == 10.25 and r["num_tool_tokens"] > 0
                assert [t["status"] for t in r["tool_calls"]] == ["ok", "timeout"]
                # the conversation as parsed messages beside the raw generation
                shape = [(m["role"], m["channel"], m["recipient"]) for m in r["messages"]]
                assert shape == [
                    ("user", None, None),
                    ("assistant", "analysis", None),
                    ("assistant", "analysis", "python"),
                    ("tool", "analysis", "assistant"),
                    ("assistant", "analysis", "python"),
                    ("tool", "analysis", "assistant"),
                    ("assistant", "final", None),
                ]
                assert (
                    r["messages"][0]["text"] == r["problem"] + "\nPlease reason step by step, and put your final "
                    "answer within \\boxed{}."
                )
                assert r["messages"][2]["text"] == "print(1)" and r["messages"][3]["text"] == "1\n"
                assert r["messages"][3]["name"] == "python"
                assert r["generation_end_time"] >= r["generation_start_time"]
                assert "<|channel|>final<|message|>" in r["generation"]
        metrics = json.loads((res / bench / "metrics.json").read_text())
        all_recs = [r for s in range(n) for r in lines(res / bench / f"output-rs{s}.jsonl")]
        assert metrics == {bench: compute_metrics(all_recs)}
        assert f"pass@1[avg-of-{n}]" in metrics[bench] and f"majority@{n}" in metrics[bench]
    assert "- aime24 -" in out.out and "- aime25 -" in out.out
    assert " | ".join(
        ["evaluation_mode", "num_entries", "avg_tokens", "gen_seconds", "symbolic_correct", "no_answer"]
    ) in " ".join(out.out.split()).replace(" |", " |")
    assert "pass@1[avg-of-4]" in out.out and "eval-results/aime25/metrics.json" in out.out


def test_rerun_skips_finished_samples_and_fills_gaps(tmp_path, capsys):
    argv = ["aime24:3", "--model", "m", "--output-dir", str(tmp_path), "--limit", "4"]
    assert run(argv, FakeFactory(), capsys)[0] == 0
    rs1 = tmp_path / "eval-results/aime24/output-rs1.jsonl"
    before = {p: p.read_bytes() for p in rs1.parent.glob("output-rs*.jsonl")}
    f = FakeFactory()
    assert run(argv, f, capsys)[0] == 0
    assert f.calls == []  # nothing left: no agent (no model load) at all
    assert {p: p.read_bytes() for p in before} == before
    # drop two finished samples of seed 1: only those are generated again, appended after the rest
    kept, dropped = rs1.read_text().splitlines()[:2], rs1.read_text().splitlines()[2:]
    rs1.write_text("\n".join(kept) + "\n")
    f = FakeFactory()
    assert run(argv, f, capsys)[0] == 0
    assert sorted((t.key[1], t.seed) for t in f.received) == sorted((json.loads(x)["id"], 1) for x in dropped)
    assert len(lines(rs1)) == 4 and lines(rs1)[:2] == [json.loads(x) for x in kept]
    assert len({r["id"] for r in lines(rs1)}) == 4
    # more samples later: only the new seeds run
    f = FakeFactory()
    assert run(["aime24:5", *argv[1:]], f, capsys)[0] == 0
    assert sorted({t.seed for t in f.received}) == [3, 4] and len(f.received) == 8


def test_torn_line_from_a_kill_is_cut_and_redone(tmp_path, capsys):
    argv = ["aime25:2", "--model", "m", "--output-dir", str(tmp_path), "--limit", "3"]
    assert run(argv, FakeFactory(), capsys)[0] == 0
    rs0 = tmp_path / "eval-results/aime25/output-rs0.jsonl"
    full = rs0.read_text().splitlines(keepends=True)
    rs0.write_text("".join(full[:2]) + full[2][: len(full[2]) // 2])  # last line torn mid-write
    code, out = run(["summarize", str(tmp_path)], None, capsys)  # the reader copes
    assert code == 0 and "aime25" in out.out
    f = FakeFactory()
    code, out = run(argv, f, capsys)
    assert code == 0 and "torn write" in out.err
    assert [(t.key[1], t.seed) for t in f.received] == [(json.loads(full[2])["id"], 0)]
    recs = lines(rs0)
    assert len(recs) == 3 and len({r["id"] for r in recs}) == 3


def test_flags_reach_the_agent(tmp_path, capsys):
    f = FakeFactory()
    code, out = run(
        [
            "aime24",
            "--num-samples",
            "1",
            "--limit",
            "1",
            "--model",
            "m",
            "--output-dir",
            str(tmp_path),
            "--no-python",
            "--tokens-to-generate",
            "500",
            "--temperature",
            "0.6",
            "--top-p",
            "0.95",
            "--reasoning-effort",
            "low",
            "--max-code-executions",
            "3",
            "--code-timeout",
            "2.5",
            "--max-code-output-chars",
            "200",
            "--tensor-parallel-size",
            "2",
            "--max-model-len",
            "4096",
            "--gpu-memory-utilization",
            "0.8",
            "--enforce-eager",
            "--kv-cache-memory-bytes",
            "256M",
            "--engine-arg",
            "distributed_executor_backend=ray",
            "--engine-arg",
            "max_num_seqs=64",
            "--max-concurrent",
            "32",
            "--seed",
            "7",
            "--save-tokens",
        ],
        f,
        capsys,
    )
    assert code == 0, out.err
    kw = f.calls[0]
    assert (
        kw["python"],
        kw["max_tokens"],
        kw["temperature"],
        kw["top_p"],
        kw["reasoning_effort"],
        kw["max_tool_calls"],
        kw["tool_timeout"],
        kw["max_output_chars"],
    ) == (False, 500, 0.6, 0.95, "low", 3, 2.5, 200)
    assert kw["max_concurrent"] == 32
    assert kw["logprobs"] is True  # --save-tokens keeps them
    assert kw["engine_kwargs"] == {
        "disable_log_stats": False,
        "use_tqdm_on_load": False,
        "tensor_parallel_size": 2,
        "max_model_len": 4096,
        "gpu_memory_utilization": 0.8,
        "enforce_eager": True,
        "kv_cache_memory_bytes": 256 << 20,
        "distributed_executor_backend": "ray",
        "max_num_seqs": 64,
    }
    [r] = lines(tmp_path / "eval-results/aime24/output-rs7.jsonl")  # seed 7 -> output-rs7
    assert r["seed"] == 7
    assert set(r["tokens"]) == {"prompt_ids", "response_ids", "response_mask", "response_logprobs"}
    toks = r["tokens"]
    assert len(toks["response_ids"]) == len(toks["response_mask"]) == len(toks["response_logprobs"])
    assert sum(r["tokens"]["response_mask"]) == r["num_generated_tokens"]
    assert len(r["tokens"]["response_ids"]) == r["num_generated_tokens"] + r["num_tool_tokens"]


def test_summarize_recomputes_and_rewrites_metrics(tmp_path, capsys):
    argv = ["aime24:2", "--model", "m", "--output-dir", str(tmp_path), "--limit", "5"]
    assert run(argv, FakeFactory(), capsys)[0] == 0
    mfile = tmp_path / "eval-results/aime24/metrics.json"
    good = mfile.read_text()
    mfile.write_text("{}")
    code, out = run(["summarize", str(tmp_path)], None, capsys)
    assert code == 0 and mfile.read_text() == good
    assert "pass@1[avg-of-2]" in out.out and "majority@2" in out.out and "pass@2" in out.out
    code, out2 = run(["summarize", str(tmp_path / "eval-results")], None, capsys)  # the eval-results folder works too
    assert code == 0 and out2.out == out.out


def test_python_api_run_eval_with_an_agent_object(tmp_path):
    f = FakeFactory()
    agent = f()
    metrics = run_eval("aime24:2", output_dir=tmp_path, limit=2, agent=agent, progress=True)
    assert set(metrics) == {"aime24"} and metrics["aime24"]["pass@1"]["num_entries"] == 2
    assert not agent.closed  # a caller's agent is left open
    assert len(agent.received) == 4


def test_input_file_benchmark(tmp_path, capsys):
    p = tmp_path / "mine.jsonl"
    p.write_text(
        "".join(json.dumps({"uid": f"u{i}", "question": f"Q{i} ANSWER={i}", "sol": str(i)}) + "\n" for i in range(3))
    )
    f = FakeFactory()
    code, out = run(
        [
            "--input-file",
            str(p),
            "--problem-field",
            "question",
            "--answer-field",
            "sol",
            "--id-field",
            "uid",
            "--num-samples",
            "2",
            "--model",
            "m",
            "--output-dir",
            str(tmp_path / "o"),
        ],
        f,
        capsys,
    )
    assert code == 0, out.err
    recs = lines(tmp_path / "o/eval-results/mine/output-rs0.jsonl")
    assert sorted(r["id"] for r in recs) == ["u0", "u1", "u2"]
    assert all(r["symbolic_correct"] == (outcome(r["problem"], 0) == "right") for r in recs)
    # the same file as jsonl:PATH
    code, out = run(
        [
            f"jsonl:{p}:1",
            "--problem-field",
            "question",
            "--answer-field",
            "sol",
            "--id-field",
            "uid",
            "--model",
            "m",
            "--output-dir",
            str(tmp_path / "o"),
        ],
        FakeFactory(),
        capsys,
    )
    assert code == 0 and "- mine -" in out.out


# ------------------------------------------------------------------------------------------------ real Agent


def test_real_agent_over_a_scripted_engine(tmp_path, capsys):
    """harmony_agent.Agent + its scheduler (scripted engine, in-process python): real Result fields land right."""
    from harmony_agent import Agent
    from harmony_agent.encoding import get_encoding

    from .evals_fake_agent import _answers
    from .scripted_engine import InProcessPool, ScriptedEngine, toks

    answers = _answers()
    enc = get_encoding()

    def respond(prompt_ids, turn):
        text = enc.decode(prompt_ids)
        problem = text.split("<|start|>user<|message|>", 1)[1].split("\nPlease reason step by step")[0]
        if turn == 0:
            return toks(
                "<|channel|>analysis<|message|>Compute.<|end|><|start|>assistant<|channel|>analysis "
                f"to=python code<|message|>print({answers[problem]})<|call|>"
            )
        return toks(f"<|channel|>final<|message|>So the answer is \\boxed{{{answers[problem]}}}.<|return|>")

    made = []

    def factory(**kw):
        kw.pop("model"), kw.pop("engine_kwargs")
        agent = Agent(engine=ScriptedEngine(respond), session_pool=InProcessPool(), **kw)
        made.append(agent)
        return agent

    code, out = run(["aime24:2", "--model", "scripted", "--output-dir", str(tmp_path), "--limit", "3"], factory, capsys)
    assert code == 0, out.err
    recs = [r for s in (0, 1) for r in lines(tmp_path / f"eval-results/aime24/output-rs{s}.jsonl")]
    assert len(recs) == 6 and all(r["symbolic_correct"] for r in recs)
    r = recs[0]
    assert r["finish_reason"] == "final" and r["code_rounds_executed"] == 1 and r["num_code_timeouts"] == 0
    assert r["num_generated_tokens"] > 0 and r["num_tool_tokens"] > 0
    assert "to=python code<|message|>print(" in r["generation"] and "<|start|>python to=assistant" in r["generation"]
    assert r["predicted_answer"] == r["expected_answer"]
    assert "100.00%" in out.out


# ------------------------------------------------------------------------------------------------ bad input


def one_line_error(out, *needles):
    """The run ends with exactly one error line; anything before it is ours (e.g. "loading m ..."), no tracebacks."""
    lines = out.err.strip().splitlines()
    assert lines and all(line.startswith("harmony-eval: ") for line in lines), out.err
    errors = [line for line in lines if line.startswith("harmony-eval: error: ")]
    assert errors == [lines[-1]], out.err
    for needle in needles:
        assert needle in lines[-1], out.err
    return lines[-1]


@pytest.mark.parametrize(
    "argv,needles",
    [
        (["aime23", "--model", "m"], ["unknown benchmark 'aime23'", "aime24, aime25"]),
        (["aime24:0", "--model", "m"], ["at least 1"]),
        (["aime24", "--limit", "1"], ["no model given", "--model"]),
        (["aime24", "--model", "m", "--bogus"], ["unrecognized arguments: --bogus", "--help"]),
        (["aime24", "--model", "m", "--kv-cache-memory-bytes", "lots"], ["is not a size"]),
        (["aime24", "--model", "m", "--prompt-template", "{question} \\boxed{}"], ["no field 'question'"]),
        (["aime24", "--model", "m", "--prompt-template", "{problem} \\boxed{}"], ["literal braces as {{ and }}"]),
        ([], ["no benchmark given"]),
    ],
)
def test_bad_arguments(tmp_path, capsys, argv, needles):
    code, out = run([*argv, "--output-dir", str(tmp_path)], FakeFactory(), capsys)
    assert code == 2
    one_line_error(out, *needles)


def test_bad_input_files(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "a", "answer": "1"}\n{"problem": "b", "answer": "2"\n')
    code, out = run(["--input-file", str(bad), "--model", "m", "--output-dir", str(tmp_path)], FakeFactory(), capsys)
    assert code == 2
    one_line_error(out, "bad.jsonl:2", "malformed JSON")
    bad.write_text('{"problem": "a", "answer": "1"}\n{"problem": "b"}\n')
    code, out = run(["--input-file", str(bad), "--model", "m", "--output-dir", str(tmp_path)], FakeFactory(), capsys)
    assert code == 2
    one_line_error(out, "bad.jsonl:2", "missing field 'answer'", "--answer-field")
    code, out = run(
        ["aime24", "--data-dir", str(tmp_path), "--model", "m", "--output-dir", str(tmp_path)], FakeFactory(), capsys
    )
    assert code == 2
    one_line_error(out, "has no aime24.jsonl")
    code, out = run(["summarize", str(tmp_path / "nothing")], None, capsys)
    assert code == 2
    one_line_error(out, "nothing is not a folder", "--output-dir of a harmony-eval run")
    (tmp_path / "empty").mkdir()
    code, out = run(["summarize", str(tmp_path / "empty")], None, capsys)
    assert code == 2
    one_line_error(out, "no output-rs*.jsonl files")


def _finished(tmp_path) -> dict:
    return {p.name: p.read_bytes() for p in (tmp_path / "eval-results/aime24").glob("output-rs*.jsonl")}


def test_model_and_vocabulary_errors_lose_nothing(tmp_path, capsys):
    from harmony_agent.errors import EngineError, VocabularyError

    argv = ["aime24:2", "--model", "m", "--output-dir", str(tmp_path), "--limit", "2"]
    assert run(argv, FakeFactory(), capsys)[0] == 0
    before = _finished(tmp_path)
    more = ["aime24:3", *argv[1:]]  # seed 2 is new work, so the agent is built

    def cannot_load(**kw):
        raise OSError("openai/gpt-oss-999b is not a local folder and is not a valid model identifier")

    code, out = run(more, cannot_load, capsys)
    assert code == 2
    one_line_error(out, "cannot start the agent for model 'm'", "OSError", "not a valid model identifier")

    def engine_error(**kw):
        raise EngineError("cannot load model 'm' with vLLM (ValueError: bad)\n; check the name or path")

    code, out = run(more, engine_error, capsys)
    assert code == 2
    one_line_error(out, "cannot load model 'm' with vLLM")

    def no_vocab(**kw):
        raise VocabularyError("TIKTOKEN_ENCODINGS_BASE='/x' holds no o200k_base.tiktoken: point it at a folder")

    code, out = run(more, no_vocab, capsys)
    assert code == 2
    one_line_error(out, "o200k_base.tiktoken")
    assert _finished(tmp_path) == before


def test_error_in_the_middle_of_a_run_keeps_finished_samples(tmp_path, capsys):
    from harmony_agent.errors import EngineError

    class Dies(FakeFactory):
        def __call__(self, **kw):
            agent = super().__call__(**kw)
            inner = agent.stream

            def stream(tasks):
                for i, pair in enumerate(inner(tasks)):
                    if i == 3:
                        raise EngineError("the engine died (CUDA error: device-side assert)")
                    yield pair

            agent.stream = stream
            return agent

    f = Dies()
    argv = ["aime24:2", "--model", "m", "--output-dir", str(tmp_path), "--limit", "4"]
    code, out = run(argv, f, capsys)
    assert code == 2 and f.agents[0].closed
    one_line_error(out, "the engine died")
    done = sum(len(read_records(p)) for p in (tmp_path / "eval-results/aime24").glob("output-rs*.jsonl"))
    assert done == 3
    f = FakeFactory()
    assert run(argv, f, capsys)[0] == 0 and len(f.received) == 8 - 3


def test_a_second_run_on_the_same_files_is_refused_before_loading_a_model(tmp_path, capsys):
    from evals.output import JsonlAppender

    with JsonlAppender(tmp_path / "eval-results/aime24/output-rs1.jsonl"):  # as if another process wrote seed 1
        f = FakeFactory()
        code, out = run(["aime24:2", "--model", "m", "--output-dir", str(tmp_path), "--limit", "1"], f, capsys)
    assert code == 2 and f.calls == []
    one_line_error(out, "output-rs1.jsonl is being written by another running process")
    assert not (tmp_path / "eval-results/aime24/output-rs0.jsonl").exists()  # no empty files left behind
    # disjoint seed ranges (data parallel shards) share one output dir fine
    with JsonlAppender(tmp_path / "eval-results/aime24/output-rs1.jsonl"):
        assert (
            run(["aime24:1", "--model", "m", "--output-dir", str(tmp_path), "--limit", "1"], FakeFactory(), capsys)[0]
            == 0
        )


def test_ctrl_c_keeps_finished_samples_and_closes_the_stream(tmp_path, capsys):
    closed = []

    class Interrupted(FakeFactory):
        def __call__(self, **kw):
            agent = super().__call__(**kw)
            inner = agent.stream

            def stream(tasks):
                try:
                    for i, pair in enumerate(inner(tasks)):
                        yield pair
                        if i == 1:
                            raise KeyboardInterrupt
                finally:
                    closed.append(True)

            agent.stream = stream
            return agent

    code, out = run(["aime24:1", "--model", "m", "--output-dir", str(tmp_path), "--limit", "5"], Interrupted(), capsys)
    assert code == 130 and "run the same command to resume" in out.err and closed == [True]
    assert len(read_records(tmp_path / "eval-results/aime24/output-rs0.jsonl")) == 2


def test_changed_settings_are_refused_on_resume(tmp_path, capsys):
    argv = ["aime24:1", "--model", "m", "--output-dir", str(tmp_path), "--limit", "1"]
    assert run(argv, FakeFactory(), capsys)[0] == 0
    code, out = run([*argv, "--temperature", "0.5"], FakeFactory(), capsys)
    assert code == 2
    one_line_error(out, "temperature=1.0", "temperature=0.5", "another --output-dir")
    # engine layout may change between resumes
    assert run(["aime24:2", *argv[1:], "--tensor-parallel-size", "4"], FakeFactory(), capsys)[0] == 0


# ------------------------------------------------------------------------------------------------ SIGKILL


def test_sigkill_mid_run_loses_nothing_and_duplicates_nothing(tmp_path):
    out_dir = tmp_path / "o"
    log = tmp_path / "received.log"
    argv = [
        sys.executable,
        "-m",
        "tests.evals_fake_agent",
        "eval",
        "aime24:4",
        "--model",
        "m",
        "--output-dir",
        str(out_dir),
        "--limit",
        "8",
        "--no-progress",
    ]
    env = {**os.environ, "FAKE_DELAY": "0.02", "FAKE_LOG": str(log)}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    folder = out_dir / "eval-results/aime24"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        count = sum(p.read_bytes().count(b"\n") for p in folder.glob("output-rs*.jsonl")) if folder.is_dir() else 0
        if count >= 10:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    snapshot = {p.name: p.read_bytes() for p in folder.glob("output-rs*.jsonl")}
    finished = {(r["id"], r["seed"]) for name in snapshot for r in read_records(folder / name)}
    assert 10 <= len(finished) < 32

    log.unlink()
    env["FAKE_DELAY"] = "0"
    r = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    redone = {(k[1], k[2]) for k in map(json.loads, log.read_text().splitlines())}
    assert redone.isdisjoint(finished) and len(redone) == 32 - len(finished)  # finished samples are not redone
    seen = []
    for name, old in snapshot.items():
        new = (folder / name).read_bytes().splitlines(keepends=True)
        good = old[: old.rfind(b"\n") + 1].splitlines(keepends=True)
        assert set(good) <= set(new)  # every finished line kept byte for byte
    ids = input_ids("aime24")
    for p in folder.glob("output-rs*.jsonl"):
        recs = list(map(json.loads, p.read_text().splitlines()))
        seen += [(r["id"], r["seed"]) for r in recs]
        assert [r["id"] for r in recs] == ids[:8]  # complete files are in input order (NeMo-Skills pairs lines)
    assert len(seen) == len(set(seen)) == 32  # nothing lost, nothing twice


# ------------------------------------------------------------------------------------------------ NeMo-Skills layout


def input_ids(bench: str) -> list[str]:
    return [
        json.loads(x)["id"] for x in (Path(os.environ["HARMONY_EVAL_DATA"]) / f"{bench}.jsonl").read_text().splitlines()
    ]


def test_files_are_in_input_order_after_finish_order_writes_and_resume(tmp_path, capsys):
    argv = ["aime24:3", "--model", "m", "--output-dir", str(tmp_path), "--limit", "6"]
    f = FakeFactory()
    assert run(argv, f, capsys)[0] == 0
    order = [(t.key[1], t.seed) for t in f.received]
    finish = sorted(order, key=lambda k: zlib.crc32(repr(("aime24", *k)).encode()))  # the fake's yield order
    assert [rid for rid, seed in finish if seed == 0] != input_ids("aime24")[:6]  # out of input order...
    folder = tmp_path / "eval-results/aime24"
    for s in range(3):
        assert [r["id"] for r in lines(folder / f"output-rs{s}.jsonl")] == input_ids("aime24")[:6]  # ...files are not
    # a file left in finish order (an older version, or a kill between the last append and the rewrite) is put
    # in order by the same command, without loading a model
    rs2 = folder / "output-rs2.jsonl"
    shuffled = rs2.read_text().splitlines(keepends=True)[::-1]
    rs2.write_text("".join(shuffled))
    code, out = run(["summarize", str(tmp_path)], None, capsys)
    assert code == 0 and "different orders" in out.err and "run the same harmony-eval command" in out.err
    f = FakeFactory()
    assert run(argv, f, capsys)[0] == 0 and f.calls == []
    assert [r["id"] for r in lines(rs2)] == input_ids("aime24")[:6]
    assert set(rs2.read_text().splitlines(keepends=True)) == set(shuffled)
    # resumed samples land at the end, then the complete file is rewritten in order
    rs0 = folder / "output-rs0.jsonl"
    rs0.write_text("".join(rs0.read_text().splitlines(keepends=True)[1::2]))
    assert run(argv, FakeFactory(), capsys)[0] == 0
    assert [r["id"] for r in lines(rs0)] == input_ids("aime24")[:6]


def test_summarize_accepts_a_benchmark_folder_and_warns_about_unequal_seeds(tmp_path, capsys):
    assert (
        run(["aime24:4", "--model", "m", "--output-dir", str(tmp_path), "--limit", "5"], FakeFactory(), capsys)[0] == 0
    )
    folder = tmp_path / "eval-results/aime24"
    code, whole = run(["summarize", str(tmp_path)], None, capsys)
    assert code == 0 and whole.err == ""
    code, one = run(["summarize", str(folder)], None, capsys)  # one benchmark folder, as NeMo-Skills accepts
    assert code == 0 and one.out == whole.out and "pass@1[avg-of-4]" in one.out
    # an unfinished seed: scored on the complete ones, and said so (no silent smaller k)
    rs3 = folder / "output-rs3.jsonl"
    rs3.write_text("".join(rs3.read_text().splitlines(keepends=True)[:2]))
    code, out = run(["summarize", str(folder)], None, capsys)
    assert code == 0
    assert "warning: aime24: 1 of 4 seeds are incomplete (rs3: 2 of 5 problems)" in out.err
    assert "3 complete seeds (k up to 3)" in out.err
    assert "pass@1[avg-of-3]" in out.out and "pass@1[avg-of-4]" not in out.out
    metrics = json.loads((folder / "metrics.json").read_text())["aime24"]
    assert "pass@3" in metrics and "pass@4" not in metrics
    recs = [r for s in range(3) for r in lines(folder / f"output-rs{s}.jsonl")]
    assert metrics == compute_metrics(recs)


def test_metrics_json_matches_an_independent_nemo_skills_style_reading(tmp_path, capsys):
    """Read the files the way NeMo-Skills does (sorted file names, line i of every file = one problem) and check
    the rows it would compute against ours."""
    import glob
    import math

    assert (
        run(["aime25:12", "--model", "m", "--output-dir", str(tmp_path), "--limit", "6"], FakeFactory(), capsys)[0] == 0
    )
    folder = tmp_path / "eval-results/aime25"
    files = sorted(glob.glob(f"{folder}/*.jsonl"))
    rows = list(zip(*[[json.loads(x) for x in open(f)] for f in files]))
    assert all(len({p["id"] for p in row}) == 1 for row in rows)  # lines pair up
    ours = json.loads((folder / "metrics.json").read_text())["aime25"]
    n, num = len(files), len(rows)
    for k in range(1, n + 1):
        pk = (
            sum(
                1
                - (
                    math.comb(n - sum(p["symbolic_correct"] for p in row), k) / math.comb(n, k)
                    if n - sum(p["symbolic_correct"] for p in row) >= k
                    else 0
                )
                for row in rows
            )
            / num
        )
        assert ours[f"pass@{k}"]["symbolic_correct"] == pytest.approx(100 * pk, abs=1e-12)
        none_k = sum(all(p["predicted_answer"] is None for p in row[:k]) for row in rows) / num
        assert ours[f"pass@{k}"]["no_answer"] == pytest.approx(100 * none_k, abs=1e-12)
        if k > 1:
            avg = sum(sum(p["symbolic_correct"] for p in row[:k]) / k for row in rows) / num
            assert ours[f"pass@1[avg-of-{k}]"]["symbolic_correct"] == pytest.approx(100 * avg, abs=1e-12)
    tokens = int(sum(sum(p["num_generated_tokens"] for p in row) / n for row in rows) / num)
    assert {r["avg_tokens"] for r in ours.values()} == {tokens}


# ------------------------------------------------------------------------------------------------ one skeleton


def test_eval_config_builds_on_the_agent_configuration():
    from evals.config import EvalConfig
    from harmony_agent import LoopConfig, Sampling

    c = EvalConfig.create(model="m", temperature=0.6, max_tool_calls=5, python=False, num_samples=4)
    assert (c.sampling.temperature, c.loop.max_tool_calls, c.prompt.python, c.num_samples) == (0.6, 5, False, 4)
    assert c.loop.max_tokens == LoopConfig().max_tokens and c.sampling.top_p == Sampling().top_p  # one default
    kw = c.agent_kwargs()
    assert (
        kw["sampling"].logprobs is False
        and EvalConfig.create(c, save_tokens=True).agent_kwargs()["sampling"].logprobs is True
    )
    with pytest.raises(TypeError, match="unknown setting.*temprature"):
        EvalConfig.create(temprature=0.5)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        EvalConfig.create(temperature=-1)
    with pytest.raises(ValueError, match="num_samples must be an int >= 1"):
        EvalConfig(num_samples=0)


def test_help_shows_defaults_and_every_subcommand(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for piece in (
        "--temperature TEMPERATURE",
        "(default: 1.0)",
        "--top-p",
        "--code-timeout",
        "(default: 10.0)",
        "--tokens-to-generate",
        "(default: 120000)",
        "--dtype",
        "--verbose",
        "--majority",
        "harmony-eval summarize DIR",
        "harmony-eval show DIR",
    ):
        assert piece in text, piece
    assert main(["summarize", "--help"]) == 0 and "benchmark folder" in capsys.readouterr().out
    assert main(["show", "--help"]) == 0 and "--seed" in capsys.readouterr().out
    from evals.generate import main as generate_main

    assert generate_main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "harmony-generate merge DIR" in text and "(default: 1)" in text


def test_an_uncached_hub_model_fails_at_once_when_offline(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    f = FakeFactory()
    code, out = run(["aime24", "--model", "openai/gpt-oss-999b", "--output-dir", str(tmp_path)], f, capsys)
    assert code == 2 and f.calls == []
    one_line_error(out, "argument --model: 'openai/gpt-oss-999b' is not in the local Hugging Face cache")
