"""Readable trajectories: str(result) / rich for a Result, and `harmony-eval show` for a saved sample."""

from __future__ import annotations

import io
import json

from rich.console import Console

from evals.cli import main

from .evals_fake_agent import FakeFactory, fake_result

CALLS = [
    ("x = 6 * 7\nprint(x)", "42\n", "ok", 0.01),
    ("while True: pass", "Execution timed out after 10.0 seconds", "timeout", 10.0),
]


def test_str_shows_analysis_calls_outputs_answer_and_counts():
    result = fake_result("What is 6*7?", 3, "So \\boxed{42}.", CALLS, padding=2)
    text = str(result)
    order = [
        "What is 6*7?",
        "--- analysis ---",
        "Let me think.",
        "--- python call 1 · ok · 0.01 s ---",
        "x = 6 * 7\nprint(x)",
        "--- output (python) ---",
        "42",
        "--- python call 2 · timeout · 10.00 s ---",
        "Execution timed out after 10.0 seconds",
        "--- final ---",
        "So \\boxed{42}.",
        "answer 42",
    ]
    positions = [text.index(piece) for piece in order]
    assert positions == sorted(positions), text
    footer = text.splitlines()[-1]
    assert "seed" not in footer and f"{result.num_model_tokens} model + {result.num_tool_tokens} tool tokens" in footer
    assert "2 python calls" in footer and "finish final" in footer and "1.0 s" in footer
    assert "seed 3" in text.splitlines()[0]
    assert "<|" not in text  # no Harmony markup


def test_repr_is_short_and_rich_renders_highlighted_code():
    result = fake_result("What is 6*7?", 0, "\\boxed{42}", CALLS, padding=2000)  # a long trajectory
    assert len(result.trajectory.token_ids) > 2000
    r = repr(result)
    assert len(r) < 300 and r.startswith("Result(answer='42', finish_reason='final'") and "tool_calls=2" in r
    out = io.StringIO()
    Console(file=out, width=100, force_terminal=True, color_system="truecolor").print(result)
    drawn = out.getvalue()
    assert "python call 1" in drawn and "\x1b[" in drawn  # colored (syntax highlighting)
    plain = io.StringIO()
    Console(file=plain, width=100).print(result)
    for piece in ("x = 6 * 7", "output (python)", "42", "final", "answer 42"):
        assert piece in plain.getvalue()


def test_show_lists_and_renders_a_saved_sample(tmp_path, capsys):
    assert (
        main(
            ["aime24:2", "--model", "m", "--output-dir", str(tmp_path), "--limit", "3", "--no-progress"],
            agent_factory=FakeFactory(),
        )
        == 0
    )
    capsys.readouterr()
    assert main(["show", str(tmp_path)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split() == ["benchmark", "id", "seed", "answer", "grade", "finish", "tokens", "calls"]
    assert len(listing) == 1 + 3 * 2 and listing[1].split()[:3] == ["aime24", "2024-I-1", "0"]
    rec = json.loads((tmp_path / "eval-results/aime24/output-rs1.jsonl").read_text().splitlines()[2])
    assert main(["show", str(tmp_path), "--id", rec["id"], "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert f"{rec['id']} · seed 1" in text.splitlines()[0]
    assert "--- python call 1 · ok · 0.25 s ---" in text and "--- python call 2 · timeout · 10.00 s ---" in text
    assert f"{rec['num_generated_tokens']} model + {rec['num_tool_tokens']} tool tokens" in text
    assert ("correct" if rec["symbolic_correct"] else "wrong") in text.splitlines()[-1]
    assert main(["show", str(tmp_path / "eval-results/aime24"), "--id", "nope"]) == 2
    assert "no sample with id 'nope'" in capsys.readouterr().err


def test_progress_counts_resumed_samples_and_says_what_its_throughput_counts():
    from evals.progress import Progress, engine_token_counter

    earlier = [
        {"symbolic_correct": True, "code_rounds_executed": 2, "num_generated_tokens": 500},
        {"symbolic_correct": False, "code_rounds_executed": 1, "num_generated_tokens": 700},
    ]
    p = Progress(False, "t", 4, earlier)
    p.update({"symbolic_correct": True, "code_rounds_executed": 3, "num_generated_tokens": 100})
    assert (p.done, p.resumed, p.tool_calls, p.graded, p.correct) == (3, 2, 6, 3, 2)
    assert p.generated_tokens() == (100, False)  # this process's tokens only, finished samples only...
    assert "tok/s (finished samples)" in p.stats() and "6 tool calls" in p.stats()  # ...and labelled so
    assert "acc 66.7% over 3" in p.stats()

    class Metric:
        def __init__(self, name, value):
            self.name, self.value = name, value

    class LLM:  # vLLM's LLM.get_metrics(): the engine's generated-token counter, running requests included
        tokens = 1000

        def get_metrics(self):
            return [Metric("vllm:prompt_tokens", 5), Metric("vllm:generation_tokens", self.tokens)]

    class Agent:
        class engine:
            llm = LLM()

    counter = engine_token_counter(Agent())
    live = Progress(False, "t", 4, [], counter)
    Agent.engine.llm.tokens = 1750
    assert live.generated_tokens() == (750, True)
    assert "tok/s ·" in live.stats() and "finished samples" not in live.stats()

    class NoStats(LLM):
        def get_metrics(self):
            raise AssertionError("Stat logging disabled")

    Agent.engine.llm = NoStats()
    assert engine_token_counter(Agent()) is None


def test_show_works_on_a_generate_output_dir(tmp_path, capsys):
    from evals.generate import main as generate_main

    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": f"q{i}", "topic": f"T{i}"}) + "\n" for i in range(2)))
    assert (
        generate_main(
            [
                "--input-file",
                str(inp),
                "--output-dir",
                str(tmp_path / "gen"),
                "--model",
                "m",
                "--prompt-template",
                "Solve {topic}: ANSWER=7",
                "--no-progress",
            ],
            agent_factory=FakeFactory(),
        )
        == 0
    )
    capsys.readouterr()
    assert main(["show", str(tmp_path / "gen"), "--id", "q1"]) == 0
    text = capsys.readouterr().out
    assert "Solve T1: ANSWER=7" in text and "--- final ---" in text and "q1 · seed 0" in text
