"""Loop logic on a scripted engine: calls, replies, budgets, the model's mistakes, exact token bookkeeping."""

from __future__ import annotations

import pytest

from harmony_agent import Agent, Task, Trajectory
from harmony_agent.encoding import CALL, get_encoding
from harmony_agent.prompt import render_prompt

from .scripted_engine import InProcessPool, ScriptedEngine, toks

CALL_2 = (
    "<|channel|>analysis<|message|>Let me compute.<|end|><|start|>assistant"
    "<|channel|>analysis to=python code<|message|>print(pow(2, 100, 7))<|call|>"
)
FINAL_2 = "<|channel|>final<|message|>The answer is \\boxed{2}.<|return|>"


def by_turn(*completions: str, default: str = FINAL_2):
    """A responder that returns completion[k] for the k-th request of a trajectory."""

    def respond(prompt_ids, turn):
        return toks(completions[turn] if turn < len(completions) else default)

    return respond


def make_agent(responder, pool=None, **kw):
    engine = ScriptedEngine(responder, max_model_len=kw.pop("max_model_len", 100_000))
    pool = pool or InProcessPool()
    kw.setdefault("conversation_start_date", "2025-01-01")
    agent = Agent(engine=engine, session_pool=pool, **kw)
    return agent, engine, pool


def test_call_runs_code_and_appends_tool_message_then_final():
    agent, engine, pool = make_agent(by_turn(CALL_2, FINAL_2))
    [[r]] = agent.run(["What is 2**100 mod 7?"])
    assert r.finish_reason == "final" and r.answer == "2"
    assert pool.log == ["print(pow(2, 100, 7))"]
    assert [(c.code, c.output, c.status) for c in r.tool_calls] == [("print(pow(2, 100, 7))", "2\n", "ok")]
    t = r.trajectory
    expected_tool = toks("<|start|>python to=assistant<|channel|>analysis<|message|>2\n<|end|><|start|>assistant")
    prompt = render_prompt("What is 2**100 mod 7?", agent.prompt)
    assert t.token_ids == prompt + toks(CALL_2) + expected_tool + toks(FINAL_2)
    assert [s.kind for s in t.segments] == ["prompt", "model", "tool", "model"]
    assert t.prompt_len == len(prompt)
    assert len(t.token_ids) == len(t.loss_mask) == len(t.logprobs)
    assert t.loss_mask == (
        [0] * len(prompt) + [1] * len(toks(CALL_2)) + [0] * len(expected_tool) + [1] * len(toks(FINAL_2))
    )
    # the second request is the first one's prompt + completion + tool tokens: append-only
    first, second = engine.submitted
    assert second.prompt_ids[: len(first.prompt_ids)] == first.prompt_ids
    assert second.prompt_ids == t.token_ids[: len(second.prompt_ids)]
    assert [m.channel for m in r.messages] == ["analysis", "analysis", "analysis", "final"]
    assert r.messages[2].author.name == "python" and r.final_text == "The answer is \\boxed{2}."
    assert r.num_model_tokens == len(toks(CALL_2)) + len(toks(FINAL_2))
    assert r.num_tool_tokens == len(expected_tool)
    assert pool.sessions[0].closed


def test_rl_view_is_aligned():
    agent, _, _ = make_agent(by_turn(CALL_2, FINAL_2))
    [[r]] = agent.run(["q"])
    rl = r.trajectory.to_rl()
    assert rl["prompt_ids"] + rl["response_ids"] == r.trajectory.token_ids
    assert len(rl["response_ids"]) == len(rl["response_mask"]) == len(rl["response_logprobs"])
    assert all(lp == -0.5 for lp, m in zip(rl["response_logprobs"], rl["response_mask"]) if m == 1)
    assert all(lp == 0.0 for lp, m in zip(rl["response_logprobs"], rl["response_mask"]) if m == 0)
    assert Trajectory.from_dict(r.trajectory.to_dict()) == r.trajectory


def test_state_persists_across_calls_of_one_trajectory_and_not_across_trajectories():
    c1 = "<|channel|>analysis to=python code<|message|>x = 41<|call|>"
    c2 = "<|channel|>analysis to=python code<|message|>print(x + 1)<|call|>"
    agent, _, pool = make_agent(by_turn(c1, c2, FINAL_2))
    results = agent.run(["a", "b"])
    for [r] in results:
        assert [c.output for c in r.tool_calls] == ["", "42\n"]
    assert len(pool.sessions) == 2


@pytest.mark.parametrize("recipient", ["python.exec", "functions.lookup", "browser.search"])
def test_unknown_recipient_gets_an_error_message_and_the_loop_goes_on(recipient):
    bad = f"<|channel|>analysis to={recipient} code<|message|>1+1<|call|>"
    agent, _, pool = make_agent(by_turn(bad, FINAL_2))
    [[r]] = agent.run(["q"])
    assert r.finish_reason == "final" and r.answer == "2"
    assert pool.log == [] and r.tool_calls == []
    reply = r.messages[1]
    assert reply.author.name == recipient and "no tool named" in reply.content[0].text
    assert reply.recipient == "assistant" and reply.channel == "analysis"


def test_malformed_header_and_missing_recipient_are_answered():
    malformed = "<|channel|><|channel|>x<|call|>"
    no_recipient = "<|channel|>analysis<|message|>print(1)<|call|>"
    agent, _, pool = make_agent(by_turn(malformed, no_recipient, FINAL_2))
    [[r]] = agent.run(["q"])
    assert r.finish_reason == "final" and pool.log == []
    texts = [m.content[0].text for m in r.messages if m.author.role.value == "tool"]
    assert "could not be parsed" in texts[0] and "named no recipient" in texts[1]


def test_python_off_means_no_tool_and_no_python_in_prompt():
    agent, _, pool = make_agent(by_turn(CALL_2, FINAL_2), python=False)
    [[r]] = agent.run(["q"])
    assert r.finish_reason == "final" and pool.sessions == []
    assert "no tools are available" in r.messages[2].content[0].text
    assert "## python" not in get_encoding().decode(r.trajectory.prompt_ids)


def test_max_tool_calls_warns_once_then_ends():
    call = "<|channel|>analysis to=python code<|message|>print(1)<|call|>"
    agent, _, pool = make_agent(lambda p, t: toks(call), max_tool_calls=2)
    [[r]] = agent.run(["q"])
    assert r.finish_reason == "max_tool_calls"
    assert len(pool.log) == 2 and len(r.tool_calls) == 2
    tool_texts = [m.content[0].text for m in r.messages if m.author.role.value == "tool"]
    assert tool_texts[-1].startswith("Error: the limit of 2 tool calls is reached")
    assert r.trajectory.token_ids[-1] == CALL


def test_max_tool_calls_warning_lets_the_model_answer():
    call = "<|channel|>analysis to=python code<|message|>print(1)<|call|>"
    agent, _, pool = make_agent(by_turn(call, call, FINAL_2), max_tool_calls=1)
    [[r]] = agent.run(["q"])
    assert r.finish_reason == "final" and len(pool.log) == 1 and r.answer == "2"


def test_generation_budget_counts_only_model_tokens():
    long_text = "<|channel|>analysis<|message|>" + "word " * 200 + "<|end|>"
    agent, engine, _ = make_agent(by_turn(CALL_2, long_text), max_tokens=60)
    [[r]] = agent.run(["q"])
    assert r.finish_reason == "length"
    assert r.num_model_tokens == 60
    assert engine.submitted[1].max_tokens == 60 - len(toks(CALL_2))


def test_context_budget_counts_tool_tokens():
    prompt_len = len(render_prompt("q", _prompt_cfg()))
    long_text = "<|channel|>analysis<|message|>" + "word " * 500 + "<|end|>"
    agent, engine, _ = make_agent(by_turn(CALL_2, long_text), max_model_len=prompt_len + 100)
    [[r]] = agent.run(["q"])
    assert r.finish_reason == "context"
    assert len(r.trajectory) == prompt_len + 100
    assert engine.submitted[1].max_tokens == 100 - len(toks(CALL_2)) - r.num_tool_tokens


def _prompt_cfg():
    from harmony_agent.prompt import PromptConfig

    return PromptConfig(conversation_start_date="2025-01-01")


def test_tool_output_that_overflows_the_context_ends_the_trajectory():
    prompt_len = len(render_prompt("q", _prompt_cfg()))
    big = "<|channel|>analysis to=python code<|message|>print('ab ' * 300)<|call|>"
    agent, _, _ = make_agent(by_turn(big), max_model_len=prompt_len + 60)
    [[r]] = agent.run(["q"])
    assert r.finish_reason == "context" and r.trajectory.token_ids[-1] == CALL
    assert len(r.tool_calls) == 1  # it ran; its output just did not fit


def test_truncated_completion_still_parses():
    cut = "<|channel|>analysis<|message|>Step one.<|end|><|start|>assistant<|channel|>anal"
    agent, _, _ = make_agent(lambda p, t: toks(cut), max_tokens=len(toks(cut)))
    [[r]] = agent.run(["q"])
    assert r.finish_reason == "length" and r.messages[0].content[0].text == "Step one."
    assert r.answer is None


def test_answer_falls_back_to_analysis_text_when_no_final_message():
    text = (
        "<|channel|>analysis<|message|>so \\boxed{7}<|end|><|start|>assistant"
        "<|channel|>commentary<|message|>done<|return|>"
    )
    agent, _, _ = make_agent(by_turn(text))
    [[r]] = agent.run(["q"])
    assert r.final_text == "" and r.answer == "7"


def test_slow_tool_does_not_block_other_trajectories():
    """While one trajectory waits on a slow cell, the engine keeps finishing the others (no round barrier)."""
    import threading

    gate = threading.Event()

    class GatedPool(InProcessPool):
        def open(self):
            session = super().open()
            original = session.run

            def run(code, timeout=None):
                gate.wait(10)
                return original(code, timeout)

            session.run = run
            return session

    def respond(prompt_ids, turn):
        text = get_encoding().decode(prompt_ids)
        return toks(CALL_2 if "slow" in text and turn == 0 else FINAL_2)

    agent, engine, _ = make_agent(respond, pool=GatedPool())
    order = []
    for task, _result in agent.stream([Task("slow", key="slow")] + [Task(f"fast {i}", key=i) for i in range(5)]):
        order.append(task.key)
        if len(order) == 5:
            gate.set()
    assert order[:5] == [0, 1, 2, 3, 4] and order[5] == "slow"


def test_seeds_differ_per_sample_and_per_turn():
    agent, engine, _ = make_agent(by_turn(CALL_2, FINAL_2))
    agent.run(["q"], n=2, seed=10)
    seeds = sorted(r.seed for r in engine.submitted)
    assert len(set(seeds)) == 4 and 10 in seeds and 11 in seeds


def test_stopping_the_stream_early_aborts_requests_and_closes_sessions():
    def respond(prompt_ids, turn):
        text = get_encoding().decode(prompt_ids)
        if "quick" in text:
            return toks(FINAL_2)
        return toks(CALL_2 if turn == 0 else "<|channel|>analysis<|message|>" + "x " * 400 + "<|end|>")

    agent, engine, pool = make_agent(respond)
    stream = agent.stream([Task("quick"), Task("slow one")])
    task, _ = next(stream)
    assert task.problem == "quick"
    # let the slow one reach its second, long request
    stream.close()
    assert not engine.running
    assert all(s.closed for s in pool.sessions)


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="exactly one of"):
        Agent()
    with pytest.raises(ValueError, match="reasoning_effort"):
        Agent(engine=ScriptedEngine(by_turn()), reasoning_effort="extreme")


def test_stopping_the_stream_stops_a_running_cell_at_once():
    """Ctrl-C or a consumer that stops early must not wait for a slow cell to time out."""
    import time

    from tool_runtime import SessionPool

    sleepy = "<|channel|>analysis to=python code<|message|>import time; time.sleep(60)<|call|>"

    def respond(prompt_ids, turn):
        return toks(FINAL_2 if "quick" in get_encoding().decode(prompt_ids) else sleepy)

    with SessionPool(max_sessions=4, timeout=60.0) as pool:
        agent, _, _ = make_agent(respond, pool=pool, tool_timeout=60.0)
        stream = agent.stream([Task("slow"), Task("quick")])
        task, _ = next(stream)
        assert task.problem == "quick"
        time.sleep(0.5)  # the slow cell is running now
        start = time.monotonic()
        stream.close()
        assert time.monotonic() - start < 1.0
        assert pool.info["live_sessions"] == 0


def test_solve_keeps_one_engine_per_model_and_engine_arguments(monkeypatch):
    from harmony_agent import agent as agent_module

    built = []

    def fake_from_model(model, **kwargs):
        built.append((model, kwargs))
        return ScriptedEngine(by_turn(CALL_2, FINAL_2))

    monkeypatch.setattr(agent_module, "_ENGINES", {})
    monkeypatch.setattr(agent_module.VLLMEngine, "from_model", staticmethod(fake_from_model))
    pool = InProcessPool()
    kwargs = {"engine_kwargs": {"hf_overrides": {"a": 1}}, "session_pool": pool}
    first = agent_module.solve("q", model="m", **kwargs)
    second = agent_module.solve("q", model="m", **kwargs)
    agent_module.solve("q", model="m", engine_kwargs={"max_model_len": 10}, session_pool=pool)
    assert first.answer == second.answer == "2"
    assert built == [("m", {"hf_overrides": {"a": 1}}), ("m", {"max_model_len": 10})]


def test_the_default_date_is_fixed_when_the_agent_is_created():
    import datetime

    agent, _, _ = make_agent(by_turn(FINAL_2), conversation_start_date=None)
    assert agent.prompt.conversation_start_date == datetime.date.today().isoformat()


def test_stopping_the_stream_returns_at_once_while_another_call_waits_for_a_full_pool():
    """A call blocked in pool.open() (every slot taken) must not hold up closing the stream."""
    import time

    from tool_runtime import SessionPool

    sleepy = "<|channel|>analysis to=python code<|message|>import time; time.sleep(60)<|call|>"
    long_final = "<|channel|>final<|message|>" + "y " * 300 + "<|return|>"

    def respond(prompt_ids, turn):
        return toks(long_final if "later" in get_encoding().decode(prompt_ids) else sleepy)

    with SessionPool(max_sessions=1, timeout=60.0, open_timeout=60.0) as pool:
        agent, _, _ = make_agent(respond, pool=pool, tool_timeout=60.0)
        stream = agent.stream([Task("slow a"), Task("slow b"), Task("later")])
        task, _ = next(stream)
        assert task.problem == "later"
        time.sleep(0.5)  # one cell sleeps in the only session, the other call waits for a slot
        start = time.monotonic()
        stream.close()
        assert time.monotonic() - start < 1.0
        deadline = time.monotonic() + 20
        while pool.info["live_sessions"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pool.info["live_sessions"] == 0
