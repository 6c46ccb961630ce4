"""The agent loop end to end on the real vLLM engine (CPU build) with the scripted tiny model and real sessions.

Every test runs on both architectures of the tiny model (conftest's ``arch_llm``): the Llama, and gpt-oss, which
goes through vLLM's gpt-oss model class (sliding-window and full attention with sinks, experts, YaRN rope) and
its hybrid KV-cache manager, as the real models do.
"""

from __future__ import annotations

import pytest

from harmony_agent import Agent, Task, VLLMEngine, solve
from harmony_agent.encoding import CALL, get_encoding
from harmony_agent.testing import (
    AIME_SUFFIX,
    SCRIPTED_PROBLEMS,
    UNKNOWN_RECIPIENT_PROBLEM,
    transcript_segments,
)

TWO_CALLS = next(p for p in SCRIPTED_PROBLEMS if len(p.calls) == 2)


@pytest.fixture
def agent(arch_llm):
    with Agent(llm=arch_llm, temperature=0.0, max_tokens=400, max_tool_calls=4, reasoning_effort="high") as a:
        yield a


@pytest.mark.parametrize("entry", SCRIPTED_PROBLEMS, ids=lambda e: e.problem[:24])
def test_scripted_problem_runs_real_code_and_reaches_its_answer_token_exactly(agent, entry):
    [[r]] = agent.run([entry.problem])
    assert r.finish_reason == "final", r.response_text
    assert r.answer == entry.answer
    assert [(c.code, c.output, c.status, c.state_lost) for c in r.tool_calls] == [
        (code, out, "ok", False) for code, out in entry.calls
    ]
    expected = transcript_segments(entry, agent.prompt)
    assert [s.kind for s in r.trajectory.segments] == [kind for kind, _ in expected]
    assert r.trajectory.token_ids == [t for _, ids in expected for t in ids]
    assert r.trajectory.token_ids[-1] == 200002
    assert all(0 < c.seconds < 5 for c in r.tool_calls)


def test_aime_suffix_and_default_date(arch_llm):
    entry = SCRIPTED_PROBLEMS[0]
    with Agent(llm=arch_llm, temperature=0.0, max_tokens=500, reasoning_effort="low") as agent:  # date = today
        [[r]] = agent.run([entry.problem + AIME_SUFFIX])
    assert r.finish_reason == "final" and r.answer == entry.answer


def test_32_trajectories_at_once(arch_llm):
    entries = [SCRIPTED_PROBLEMS[i % len(SCRIPTED_PROBLEMS)] for i in range(32)]
    with Agent(llm=arch_llm, temperature=0.0, max_tokens=500) as agent:
        done = list(agent.stream(Task(e.problem, seed=i, key=i) for i, e in enumerate(entries)))
    assert sorted(task.key for task, _ in done) == list(range(32))
    for task, r in done:
        entry = entries[task.key]
        assert (r.finish_reason, r.answer) == ("final", entry.answer)
        assert [c.output for c in r.tool_calls] == [out for _, out in entry.calls]


def test_unknown_recipient_gets_an_error_reply_and_the_run_ends_cleanly(agent):
    [[r]] = agent.run([UNKNOWN_RECIPIENT_PROBLEM.problem])
    reply = next(m for m in r.messages if m.author.role.value == "tool")
    assert reply.author.name == "functions.lookup" and reply.channel == "commentary"
    assert "no tool named 'functions.lookup'" in reply.content[0].text
    # what the tiny model does after the error reply is not scripted; the loop must just carry on cleanly
    assert r.error is None and r.finish_reason in {"final", "length", "context", "max_tool_calls"}
    first_tool_reply_at = r.messages.index(reply)
    assert r.messages[first_tool_reply_at - 1].recipient == "functions.lookup"


def test_max_tool_calls_on_the_real_engine(arch_llm):
    with Agent(llm=arch_llm, temperature=0.0, max_tokens=600, max_tool_calls=1) as agent:
        [[r]] = agent.run([TWO_CALLS.problem])
    assert [c.code for c in r.tool_calls] == [TWO_CALLS.calls[0][0]]
    tool_texts = [m.content[0].text for m in r.messages if m.author.role.value == "tool"]
    assert tool_texts[-1].startswith("Error: the limit of 1 tool calls is reached")
    assert r.finish_reason in {"final", "length", "max_tool_calls"}


def test_generation_budget_on_the_real_engine(arch_llm):
    with Agent(llm=arch_llm, temperature=0.0, max_tokens=7) as agent:
        [[r]] = agent.run([SCRIPTED_PROBLEMS[0].problem])
    assert r.finish_reason == "length" and r.num_model_tokens == 7


def test_context_budget_counts_tool_tokens_on_the_real_engine(arch_llm):
    entry = SCRIPTED_PROBLEMS[0]
    engine = VLLMEngine(arch_llm)
    with Agent(engine=engine, temperature=0.0, max_tokens=2000) as agent:
        (_, prompt), (_, first), (_, tool), (_, final) = transcript_segments(entry, agent.prompt)
        engine.max_model_len = len(prompt) + len(first) + len(tool) + 5  # the final message cannot fit
        assert len(final) > 5
        [[r]] = agent.run([entry.problem])
    assert r.finish_reason == "context"
    assert len(r.trajectory) == engine.max_model_len
    assert r.num_tool_tokens > 0 and len(r.tool_calls) == 1


def test_unseen_prompt_ends_cleanly(arch_llm):
    with Agent(llm=arch_llm, temperature=1.0, max_tokens=300, max_tool_calls=3) as agent:
        results = agent.run(["Write a haiku about the sea.", "Tell me about Paris."], n=2, seed=5)
    for row in results:
        for r in row:
            assert r.finish_reason in {"final", "length", "context", "max_tool_calls"}
            assert r.error is None
            t = r.trajectory
            assert len(t.token_ids) == len(t.loss_mask) == len(t.logprobs) <= 4096
            assert r.num_model_tokens <= 300


def test_sampled_logprobs_equal_recomputed_prompt_logprobs(arch_llm):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    with Agent(llm=arch_llm, temperature=1.0, max_tokens=300) as agent:
        [[r]] = agent.run([TWO_CALLS.problem], seed=3)
    t = r.trajectory
    assert sum(t.loss_mask) == r.num_model_tokens > 0
    [out] = arch_llm.generate(
        [TokensPrompt(prompt_token_ids=t.token_ids)],
        SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False),
        use_tqdm=False,
    )
    recomputed = out.prompt_logprobs
    diffs = [
        abs(recomputed[i][t.token_ids[i]].logprob - t.logprobs[i])
        for i in range(t.prompt_len, len(t))
        if t.loss_mask[i]
    ]
    assert len(diffs) == r.num_model_tokens
    assert max(diffs) < 1e-3, max(diffs)
    assert all(lp == 0.0 for lp, m in zip(t.logprobs, t.loss_mask) if m == 0)


def test_solve_with_the_users_own_llm(arch_llm):
    entry = SCRIPTED_PROBLEMS[0]
    r = solve(entry.problem, llm=arch_llm, temperature=0.0, max_tokens=500)
    assert r.answer == entry.answer and r.trajectory.token_ids[-1] == 200002
    rl = r.trajectory.to_rl()
    assert rl["response_ids"].count(CALL) == 1


# -- issue 9 on the real engine: tool runtime failures are data, messages input ------------------------------------


def _python_without_ipython(tmp_path):
    """An interpreter whose `import IPython` fails, as in an environment without IPython installed: a script that
    hides IPython, then runs the module it was asked to run (``python -s -m MODULE ARGS``)."""
    import stat
    import sys

    wrapper = tmp_path / "python-without-ipython"
    wrapper.write_text(f"""#!{sys.executable}
import runpy, sys
class NoIPython:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "IPython":
            raise ModuleNotFoundError("No module named 'IPython'", name="IPython")
sys.meta_path.insert(0, NoIPython())
args = [a for a in sys.argv[1:] if a != "-s"]
assert args[0] == "-m", args
sys.argv = args[1:]
runpy.run_module(args[1], run_name="__main__", alter_sys=True)
""")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return str(wrapper)


def test_a_tool_runtime_that_cannot_start_fails_the_run_at_once(tiny_llm, tmp_path, monkeypatch):
    import functools
    import time

    import tool_runtime
    from harmony_agent.errors import ToolRuntimeError

    monkeypatch.setattr(
        tool_runtime,
        "SessionPool",
        functools.partial(tool_runtime.SessionPool, python=_python_without_ipython(tmp_path)),
    )
    engine = VLLMEngine(tiny_llm)
    start = time.monotonic()
    with Agent(engine=engine, temperature=0.0, max_tokens=400) as agent:
        with pytest.raises(ToolRuntimeError, match="No module named 'IPython'"):
            agent.run([SCRIPTED_PROBLEMS[0].problem])
    assert time.monotonic() - start < 60
    assert not engine.has_unfinished()


def test_a_session_that_cannot_open_is_a_runtime_error_record_and_the_run_goes_on(tiny_llm):
    from tool_runtime import SessionPool

    entry = SCRIPTED_PROBLEMS[0]
    with SessionPool(max_sessions=1, open_timeout=0) as pool:
        held = pool.open()  # the only slot is taken: every open() of the run fails at once
        with Agent(llm=tiny_llm, session_pool=pool, temperature=0.0, max_tokens=400, max_tool_calls=2) as agent:
            [[r]] = agent.run([entry.problem], seed=0)
        held.close()
    assert r.error is None and r.finish_reason in {"final", "length", "context", "max_tool_calls"}
    assert r.tool_calls and r.tool_calls[0].code == entry.calls[0][0]
    assert {c.status for c in r.tool_calls} == {"runtime_error"}
    assert "all 1 sessions are in use" in r.tool_calls[0].error
    tool_texts = [m.content[0].text for m in r.messages if m.author.role.value == "tool"]
    assert tool_texts[0].startswith("Error: the python tool failed to run this call")


def test_messages_input_on_the_real_engine(agent):
    from openai_harmony import Message, Role

    entry = SCRIPTED_PROBLEMS[0]
    as_dicts = [{"role": "user", "content": entry.problem}]
    as_harmony = [Message.from_role_and_content(Role.USER, entry.problem)]
    results = agent.run([entry.problem, as_dicts, as_harmony], seed=0)
    expected = [t for _, ids in transcript_segments(entry, agent.prompt) for t in ids]
    for [r] in results:
        assert r.finish_reason == "final" and r.answer == entry.answer
        assert r.trajectory.token_ids == expected
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": entry.problem},
    ]
    [[r]] = agent.run([history], seed=0)
    assert r.error is None and r.problem == history
    text = get_encoding().decode(r.trajectory.prompt_ids)
    assert "Be brief." in text and text.endswith(f"<|start|>user<|message|>{entry.problem}<|end|><|start|>assistant")


@pytest.mark.own_engine
def test_the_models_own_eos_ids_do_not_cut_a_trajectory(tiny_gptoss_path, tmp_path):
    """vLLM stops on every id of the model's generation_config ``eos_token_id`` unless the request ignores it.

    gpt-oss lists <|return|>, <|endoftext|> and <|call|> there. A copy of the tiny gpt-oss model whose list also
    holds a token the script writes mid-message: raw vLLM stops on it; the loop's requests (``ignore_eos`` with
    its own stop tokens) run the script to its end, token-exactly.
    """
    import json
    import os

    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from harmony_agent.testing import STOP_TOKEN_IDS, engine_kwargs, expected_transcript, prompt_ids

    entry = SCRIPTED_PROBLEMS[0]
    first = expected_transcript(entry)[0][0]
    mid = first[4]  # inside the first analysis message
    assert mid not in STOP_TOKEN_IDS
    model = tmp_path / "eos-model"
    model.mkdir()
    for name in ("config.json", "model.safetensors"):
        os.symlink(tiny_gptoss_path / name, model / name)
    generation = json.loads((tiny_gptoss_path / "generation_config.json").read_text())
    generation["eos_token_id"] = [*generation["eos_token_id"], mid]
    (model / "generation_config.json").write_text(json.dumps(generation))

    llm = LLM(model=str(model), **engine_kwargs(kv_cache_memory_bytes=64 << 20, max_model_len=None))
    try:
        with Agent(llm=llm, temperature=0.0, max_tokens=400) as agent:
            [raw] = llm.generate(
                [TokensPrompt(prompt_token_ids=prompt_ids(entry.problem, agent.prompt))],
                SamplingParams(temperature=0, max_tokens=100, detokenize=False, stop_token_ids=list(STOP_TOKEN_IDS)),
                use_tqdm=False,
            )
            assert list(raw.outputs[0].token_ids) == first[:5]  # the test's premise: vLLM alone would cut here
            [[r]] = agent.run([entry.problem])
            expected = transcript_segments(entry, agent.prompt)
        assert r.finish_reason == "final" and r.answer == entry.answer
        assert r.trajectory.token_ids == [t for _, ids in expected for t in ids]
    finally:
        del llm
        import gc

        gc.collect()
