"""The agent loop end to end on the real vLLM engine (CPU build) with the scripted tiny model and real sessions."""
from __future__ import annotations

import pytest

from harmony_agent import Agent, Task, VLLMEngine, solve
from harmony_agent.encoding import CALL
from harmony_agent.testing import (
    AIME_SUFFIX,
    SCRIPTED_PROBLEMS,
    UNKNOWN_RECIPIENT_PROBLEM,
    transcript_segments,
)

TWO_CALLS = next(p for p in SCRIPTED_PROBLEMS if len(p.calls) == 2)


@pytest.fixture
def agent(tiny_llm):
    with Agent(llm=tiny_llm, temperature=0.0, max_tokens=400, max_tool_calls=4, reasoning_effort="high") as a:
        yield a


@pytest.mark.parametrize("entry", SCRIPTED_PROBLEMS, ids=lambda e: e.problem[:24])
def test_scripted_problem_runs_real_code_and_reaches_its_answer_token_exactly(agent, entry):
    [[r]] = agent.run([entry.problem])
    assert r.finish_reason == "final", r.response_text
    assert r.answer == entry.answer
    assert [(c.code, c.output, c.status, c.state_lost) for c in r.tool_calls] == [
        (code, out, "ok", False) for code, out in entry.calls]
    expected = transcript_segments(entry, agent.prompt)
    assert [s.kind for s in r.trajectory.segments] == [kind for kind, _ in expected]
    assert r.trajectory.token_ids == [t for _, ids in expected for t in ids]
    assert r.trajectory.token_ids[-1] == 200002
    assert all(0 < c.seconds < 5 for c in r.tool_calls)


def test_aime_suffix_and_default_date(tiny_llm):
    entry = SCRIPTED_PROBLEMS[0]
    with Agent(llm=tiny_llm, temperature=0.0, max_tokens=500, reasoning_effort="low") as agent:  # date = today
        [[r]] = agent.run([entry.problem + AIME_SUFFIX])
    assert r.finish_reason == "final" and r.answer == entry.answer


def test_32_trajectories_at_once(tiny_llm):
    entries = [SCRIPTED_PROBLEMS[i % len(SCRIPTED_PROBLEMS)] for i in range(32)]
    with Agent(llm=tiny_llm, temperature=0.0, max_tokens=500) as agent:
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


def test_max_tool_calls_on_the_real_engine(tiny_llm):
    with Agent(llm=tiny_llm, temperature=0.0, max_tokens=600, max_tool_calls=1) as agent:
        [[r]] = agent.run([TWO_CALLS.problem])
    assert [c.code for c in r.tool_calls] == [TWO_CALLS.calls[0][0]]
    tool_texts = [m.content[0].text for m in r.messages if m.author.role.value == "tool"]
    assert tool_texts[-1].startswith("Error: the limit of 1 tool calls is reached")
    assert r.finish_reason in {"final", "length", "max_tool_calls"}


def test_generation_budget_on_the_real_engine(tiny_llm):
    with Agent(llm=tiny_llm, temperature=0.0, max_tokens=7) as agent:
        [[r]] = agent.run([SCRIPTED_PROBLEMS[0].problem])
    assert r.finish_reason == "length" and r.num_model_tokens == 7


def test_context_budget_counts_tool_tokens_on_the_real_engine(tiny_llm):
    entry = SCRIPTED_PROBLEMS[0]
    engine = VLLMEngine(tiny_llm)
    with Agent(engine=engine, temperature=0.0, max_tokens=2000) as agent:
        (_, prompt), (_, first), (_, tool), (_, final) = transcript_segments(entry, agent.prompt)
        engine.max_model_len = len(prompt) + len(first) + len(tool) + 5  # the final message cannot fit
        assert len(final) > 5
        [[r]] = agent.run([entry.problem])
    assert r.finish_reason == "context"
    assert len(r.trajectory) == engine.max_model_len
    assert r.num_tool_tokens > 0 and len(r.tool_calls) == 1


def test_unseen_prompt_ends_cleanly(tiny_llm):
    with Agent(llm=tiny_llm, temperature=1.0, max_tokens=300, max_tool_calls=3) as agent:
        results = agent.run(["Write a haiku about the sea.", "Tell me about Paris."], n=2, seed=5)
    for row in results:
        for r in row:
            assert r.finish_reason in {"final", "length", "context", "max_tool_calls"}
            assert r.error is None
            t = r.trajectory
            assert len(t.token_ids) == len(t.loss_mask) == len(t.logprobs) <= 4096
            assert r.num_model_tokens <= 300


def test_sampled_logprobs_equal_recomputed_prompt_logprobs(tiny_llm):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    with Agent(llm=tiny_llm, temperature=1.0, max_tokens=300) as agent:
        [[r]] = agent.run([TWO_CALLS.problem], seed=3)
    t = r.trajectory
    assert sum(t.loss_mask) == r.num_model_tokens > 0
    [out] = tiny_llm.generate([TokensPrompt(prompt_token_ids=t.token_ids)],
                              SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False), use_tqdm=False)
    recomputed = out.prompt_logprobs
    diffs = [abs(recomputed[i][t.token_ids[i]].logprob - t.logprobs[i])
             for i in range(t.prompt_len, len(t)) if t.loss_mask[i]]
    assert len(diffs) == r.num_model_tokens
    assert max(diffs) < 1e-3, max(diffs)
    assert all(lp == 0.0 for lp, m in zip(t.logprobs, t.loss_mask) if m == 0)


def test_solve_with_the_users_own_llm(tiny_llm):
    entry = SCRIPTED_PROBLEMS[0]
    r = solve(entry.problem, llm=tiny_llm, temperature=0.0, max_tokens=500)
    assert r.answer == entry.answer and r.trajectory.token_ids[-1] == 200002
    rl = r.trajectory.to_rl()
    assert rl["response_ids"].count(CALL) == 1
