"""harmony-generate: prompt templates, resumability, chunks + merge, bad input (one line, exit code 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.errors import EvalError
from evals.generate import chunk_dir, generate, main, merge_chunks

from .evals_fake_agent import FakeFactory, outcome


def write_input(path: Path, n: int = 7) -> Path:
    path.write_text("".join(json.dumps({"id": f"p{i}", "topic": f"T{i}", "ans": str(i)}) + "\n" for i in range(n)))
    return path


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


TEMPLATE = "Solve {topic}: ANSWER={ans}\nPut the answer in \\boxed{{}}."


def gen(argv, factory, capsys):
    code = main([*argv, "--no-progress"] if argv[:1] != ["merge"] else argv, agent_factory=factory)
    return code, capsys.readouterr()


def test_generate_with_template_and_resume(tmp_path, capsys):
    inp = write_input(tmp_path / "in.jsonl")
    out = tmp_path / "out"
    f = FakeFactory()
    code, cap = gen(
        [
            "--input-file",
            str(inp),
            "--output-dir",
            str(out),
            "--prompt-template",
            TEMPLATE,
            "--num-samples",
            "2",
            "--model",
            "m",
            "--no-python",
            "--answer-field",
            "ans",
        ],
        f,
        capsys,
    )
    assert code == 0, cap.err
    assert f.calls[0]["python"] is False and len(f.received) == 14
    assert "Solve T0: ANSWER=0\nPut the answer in \\boxed{}." in {t.problem for t in f.received}
    for s in (0, 1):
        recs = lines(out / f"output-rs{s}.jsonl")
        assert sorted(r["id"] for r in recs) == [f"p{i}" for i in range(7)]
        r = recs[0]
        assert r["prompt"].startswith("Solve T") and r["topic"].startswith("T") and r["seed"] == s
        assert {"generation", "predicted_answer", "symbolic_correct", "num_generated_tokens", "finish_reason"} <= set(r)
        assert all(x["symbolic_correct"] == (outcome(x["prompt"], s) == "right") for x in recs)
    f2 = FakeFactory()
    assert (
        gen(
            [
                "--input-file",
                str(inp),
                "--output-dir",
                str(out),
                "--prompt-template",
                TEMPLATE,
                "--num-samples",
                "2",
                "--model",
                "m",
                "--no-python",
                "--answer-field",
                "ans",
            ],
            f2,
            capsys,
        )[0]
        == 0
    )
    assert f2.calls == []  # all done: nothing regenerated


def test_template_file_and_no_answer_field(tmp_path, capsys):
    inp = write_input(tmp_path / "in.jsonl", 2)
    tf = tmp_path / "t.txt"
    tf.write_text("Topic {topic}\nthink hard\n")
    f = FakeFactory()
    code, cap = gen(
        [
            "--input-file",
            str(inp),
            "--output-dir",
            str(tmp_path / "o"),
            "--prompt-template-file",
            str(tf),
            "--model",
            "m",
        ],
        f,
        capsys,
    )
    assert code == 0, cap.err
    assert sorted(t.problem for t in f.received) == ["Topic T0\nthink hard", "Topic T1\nthink hard"]
    recs = lines(tmp_path / "o/output-rs0.jsonl")
    assert "symbolic_correct" not in recs[0] and "predicted_answer" in recs[0]


def test_chunks_and_merge(tmp_path, capsys):
    inp = write_input(tmp_path / "in.jsonl", 7)
    out = tmp_path / "out"
    common = [
        "--input-file",
        str(inp),
        "--output-dir",
        str(out),
        "--prompt-template",
        TEMPLATE,
        "--num-samples",
        "2",
        "--model",
        "m",
        "--num-chunks",
        "3",
    ]
    seen = []
    for cid in (2, 0):  # out of order, and chunk 1 missing for now
        f = FakeFactory()
        assert gen([*common, "--chunk-id", str(cid)], f, capsys)[0] == 0
        seen += [t.key[1] for t in f.received if t.seed == 0]
    assert sorted(seen) == ["p0", "p1", "p4", "p5", "p6"]  # chunks 0..1 / 4..6 of 7 (sizes 2, 2, 3)
    code, cap = gen(["merge", str(out)], None, capsys)
    assert code == 2
    err = cap.err.strip()
    assert err.startswith("harmony-generate: error: cannot merge") and "chunk 1 not started" in err and "\n" not in err
    assert not (out / "output-rs0.jsonl").exists()
    code, cap = gen(["merge", str(out), "--allow-incomplete"], None, capsys)
    assert code == 0 and "chunk 1 not started" in cap.err
    assert [r["id"] for r in lines(out / "output-rs0.jsonl")] == ["p0", "p1", "p4", "p5", "p6"]
    assert gen([*common, "--chunk-id", "1"], FakeFactory(), capsys)[0] == 0
    # a chunk cut short (a lost line) is reported too
    rs1 = chunk_dir(out, 1, 3) / "output-rs1.jsonl"
    full = rs1.read_text()
    rs1.write_text(full.splitlines(keepends=True)[0])
    with pytest.raises(EvalError, match="chunk 1 lacks 1 of 4 samples"):
        merge_chunks(out)
    assert gen([*common, "--chunk-id", "1"], FakeFactory(), capsys)[0] == 0  # resume the chunk
    code, cap = gen(["merge", str(out)], None, capsys)
    assert code == 0, cap.err
    for s in (0, 1):
        recs = lines(out / f"output-rs{s}.jsonl")
        assert [r["id"] for r in recs] == [f"p{i}" for i in range(7)] and {r["seed"] for r in recs} == {s}
    assert "14 samples" in cap.out


def test_chunk_of_another_input_is_refused(tmp_path, capsys):
    inp = write_input(tmp_path / "in.jsonl", 4)
    common = [
        "--output-dir",
        str(tmp_path / "o"),
        "--prompt-template",
        "{topic}",
        "--model",
        "m",
        "--num-chunks",
        "2",
        "--chunk-id",
        "0",
    ]
    assert gen(["--input-file", str(inp), *common], FakeFactory(), capsys)[0] == 0
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"id": f"z{i}", "topic": "x"}) + "\n" for i in range(4)))
    code, cap = gen(["--input-file", str(other), *common], FakeFactory(), capsys)
    assert code == 2 and "another input" in cap.err and cap.err.strip().count("\n") == 0


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--prompt-template", "{nope} x"], "uses {nope} but the record has no field 'nope' (fields: ans, id, topic)"),
        (["--prompt-template", "{topic} \\boxed{}"], "literal braces as {{ and }}"),
        (["--num-chunks", "2", "--chunk-id", "2"], "need 0 <= chunk-id < num-chunks"),
        (["--answer-field", "missing"], "missing field 'missing'"),
        (["--prompt-template-file", "/nonexistent/t.txt"], "cannot read --prompt-template-file"),
        (["--num-samples", "0"], "argument --num-samples: must be >= 1, got 0"),
    ],
)
def test_bad_input(tmp_path, capsys, extra, needle):
    inp = write_input(tmp_path / "in.jsonl", 2)
    code, cap = gen(
        ["--input-file", str(inp), "--output-dir", str(tmp_path / "o"), "--model", "m", *extra], FakeFactory(), capsys
    )
    err = cap.err.strip()
    assert code == 2 and err.startswith("harmony-generate: error: ") and "\n" not in err
    assert needle in err, err


def test_bad_input_file_and_merge_without_chunks(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n{oops}\n')
    code, cap = gen(
        ["--input-file", str(bad), "--output-dir", str(tmp_path / "o"), "--model", "m"], FakeFactory(), capsys
    )
    assert code == 2 and "bad.jsonl:2: malformed JSON" in cap.err
    code, cap = gen(["merge", str(tmp_path / "o")], None, capsys)
    assert code == 2 and "no chunk folders" in cap.err
    code, cap = gen(["--output-dir", str(tmp_path / "o")], None, capsys)
    assert code == 2 and "--input-file" in cap.err


def test_python_api(tmp_path):
    inp = write_input(tmp_path / "in.jsonl", 3)
    agent = FakeFactory()()
    info = generate(inp, tmp_path / "o", prompt_template="{topic}", num_samples=2, agent=agent, progress=False)
    assert info == {"output_dir": str(tmp_path / "o"), "records": 3, "samples": 6, "generated": 6}
    assert len(agent.received) == 6
