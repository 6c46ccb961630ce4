"""The CPU demo (harmony_agent/demo.py) and the quickstart snippet as a plain script, on the real engine.

The rendering is checked on a scripted engine (fast); the demo's main and the quickstart snippet run in child
processes on the tiny model, as a user runs them: `python -m harmony_agent.demo`, and a script without an
`if __name__ == "__main__":` guard and without VLLM_ENABLE_V1_MULTIPROCESSING set (build_llm picks the
in-process engine on vLLM's CPU build).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from harmony_agent import Agent
from harmony_agent.demo import render
from harmony_agent.testing import SCRIPTED_PROBLEMS, expected_transcript

from .scripted_engine import InProcessPool, ScriptedEngine

ROOT = Path(__file__).resolve().parent.parent
TWO_CALLS = SCRIPTED_PROBLEMS[2]  # x = 12 * 34 / print(x + 1): the second call reads the first one's state


def _child_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
    env["PYTHONPATH"] = str(ROOT)
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    return env


def test_render_shows_analysis_each_call_and_output_and_the_answer():
    model, _ = expected_transcript(TWO_CALLS)
    engine = ScriptedEngine(lambda prompt, turn: model[turn])
    with Agent(engine=engine, session_pool=InProcessPool(), temperature=0.0) as agent:
        [[result]] = agent.run([TWO_CALLS.problem])
    out = io.StringIO()
    render(result, out)
    text = out.getvalue()
    assert f"problem: {TWO_CALLS.problem}" in text
    assert f"[analysis] {TWO_CALLS.reasoning}" in text
    assert "    | x = 12 * 34\n    | print(x)\n" in text and "    | print(x + 1)\n" in text
    assert "    > 408\n" in text and "    > 409\n" in text
    assert "[final] The answer is \\boxed{409}." in text
    assert "answer: 409   finish: final   python calls: 2" in text
    assert f"tokens: {result.num_model_tokens} sampled + {result.num_tool_tokens} tool" in text
    assert text.index("408") < text.index("print(x + 1)") < text.index("409")  # in conversation order


def test_demo_main_solves_with_real_tool_calls_on_the_real_engine(tiny_model_path, tmp_path):
    env = _child_env(tmp_path)
    env["HARMONY_AGENT_TEST_CACHE"] = str(tiny_model_path.parent)
    proc = subprocess.run(
        [sys.executable, "-m", "harmony_agent.demo", "--problem", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert f"tiny Harmony model: {tiny_model_path}" in out
    assert "    | x = 12 * 34" in out and "    > 408" in out and "    > 409" in out  # outputs of real sessions
    assert "answer: 409   finish: final   python calls: 2" in out
    assert "1 problems in" in out


def test_the_quickstart_snippet_runs_as_a_plain_script_on_cpu(tiny_model_path, tmp_path):
    script = tmp_path / "quickstart.py"
    script.write_text(
        textwrap.dedent(f"""\
        from harmony_agent import solve
        from harmony_agent.testing import engine_kwargs

        result = solve("What is 2**100 mod 7?", model={str(tiny_model_path)!r}, engine_kwargs=engine_kwargs(),
                       temperature=0.0, max_tokens=500)
        print(result.answer, result.finish_reason, len(result.tool_calls))
        """)
    )
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=_child_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "2 final 1"
