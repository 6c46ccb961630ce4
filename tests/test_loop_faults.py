"""Issue 9: faults of the model output, the sessions and the engine end one trajectory or the run, never hang,
never leak a session, and never take the other trajectories down. Numbered as the issue's items."""

from __future__ import annotations

import threading
import time

import pytest

from harmony_agent import Agent, Task, Trajectory
from harmony_agent.encoding import CALL, get_encoding
from harmony_agent.engine import Completion
from harmony_agent.errors import EngineFailure, ToolRuntimeError
from harmony_agent.parsing import parse_completion
from harmony_agent.prompt import PromptConfig, render_prompt

from .scripted_engine import InProcessPool, InProcessSession, ScriptedEngine, toks

PY = "<|channel|>analysis to=python code<|message|>{}<|call|>"
CALL_2 = PY.format("print(pow(2, 100, 7))")
FINAL_2 = "<|channel|>final<|message|>The answer is \\boxed{2}.<|return|>"
DATE = "2025-01-01"


def by_turn(*completions: str, default: str = FINAL_2):
    def respond(prompt_ids, turn):
        return toks(completions[turn] if turn < len(completions) else default)

    return respond


def by_problem(table: dict[str, tuple[str, ...]]):
    """Completions per problem (found in the prompt text), by turn; FINAL_2 after the last."""

    def respond(prompt_ids, turn):
        text = get_encoding().decode(prompt_ids)
        for key, completions in table.items():
            if key in text:
                return toks(completions[turn] if turn < len(completions) else FINAL_2)
        return toks(FINAL_2)

    return respond


def make_agent(responder, pool=None, engine=None, **kw):
    engine = engine or ScriptedEngine(responder, max_model_len=kw.pop("max_model_len", 100_000))
    pool = pool if pool is not None else InProcessPool()
    kw.setdefault("conversation_start_date", DATE)
    return Agent(engine=engine, session_pool=pool, **kw), engine, pool


def bounded(fn, seconds: float = 60.0):
    """Run ``fn`` on a thread; fail (instead of hanging the suite) if it does not return in ``seconds``."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"hung for {seconds} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


def run_all(agent, tasks):
    return bounded(lambda: {task.key: r for task, r in agent.stream(tasks)})


class PoolOf(InProcessPool):
    """An in-process pool whose sessions' run() is replaced by ``run(session, code)``."""

    def __init__(self, run):
        super().__init__()
        self._run = run

    def open(self):
        session = super().open()
        original = session.run
        session.run = lambda code, timeout=None: self._run(session, code, original)
        return session


# -- 1. every path of a call ends in a reply ---------------------------------------------------------------------


@pytest.mark.parametrize("behaviour", ["none", "string", "system_exit", "keyboard_interrupt", "exit_call"])
def test_1_a_session_that_misbehaves_still_answers_the_call(behaviour):
    def run(session, code, original):
        if behaviour == "none":
            return None
        if behaviour == "string":
            return "2\n"
        if behaviour == "system_exit":
            raise SystemExit(3)
        if behaviour == "keyboard_interrupt":
            raise KeyboardInterrupt
        return original(code)

    code = "exit()" if behaviour == "exit_call" else "print(1)"
    agent, _, pool = make_agent(by_turn(PY.format(code), FINAL_2), pool=PoolOf(run))
    results = run_all(agent, [Task("q", key=0)])
    r = results[0]
    assert r.finish_reason == "final" and r.answer == "2"
    [record] = r.tool_calls
    assert record.status == "runtime_error" and record.error
    assert record.state_lost  # the broken session was dropped: the next call starts a fresh one
    tool_text = [m.content[0].text for m in r.messages if m.author.role.value == "tool"][0]
    assert tool_text.startswith("Error: the python tool failed to run this call")
    assert all(s.closed for s in pool.sessions)


def test_1_a_call_that_never_answers_is_given_up_after_its_deadline():
    never = threading.Event()

    def run(session, code, original):
        never.wait(60)
        return original(code)

    agent, _, pool = make_agent(by_turn(CALL_2, FINAL_2), pool=PoolOf(run), tool_timeout=0.2, tool_grace=0.3)
    start = time.monotonic()
    r = run_all(agent, [Task("q", key=0)])[0]
    assert time.monotonic() - start < 30
    assert r.finish_reason == "final"
    [record] = r.tool_calls
    assert record.status == "runtime_error" and "no answer within 0.5 s" in record.error
    never.set()


# -- 2. a bad event ends one trajectory and closes its session ------------------------------------------------


class FaultyEngine(ScriptedEngine):
    """A scripted engine that breaks the requests of problems whose prompt names a fault."""

    def submit(self, request, sampling):
        if "submit-fails" in get_encoding().decode(list(request.prompt_ids)) and request.prompt_ids.count(CALL):
            raise RuntimeError("this request cannot be scheduled")
        super().submit(request, sampling)

    def step(self):
        out = []
        for c in super().step():
            text = get_encoding().decode(self._prompt(c.request_id))
            if "bad-logprobs" in text and c.token_ids[-1:] == [CALL]:
                c = Completion(c.request_id, c.token_ids, c.logprobs[:-1], c.finish)
            if "bad-finish" in text:
                c = Completion(c.request_id, c.token_ids, c.logprobs, "exploded")  # type: ignore[arg-type]
            out.append(c)
        return out

    def _prompt(self, request_id):
        return next(list(r.prompt_ids) for r in self.submitted if r.request_id == request_id)


def test_2_one_bad_event_ends_only_its_own_trajectory_and_closes_its_session():
    surrogate = PY.format("print('\\ud800 lone')")
    table = {
        "bad-logprobs": (CALL_2,),
        "surrogate": (surrogate,),
        "submit-fails": (CALL_2,),
        "bad-finish": (CALL_2,),
        "fine": (CALL_2,),
    }
    engine = FaultyEngine(by_problem(table))
    agent, _, pool = make_agent(None, engine=engine)
    results = run_all(agent, [Task(p, key=p) for p in table])
    assert results["fine"].finish_reason == "final" and results["fine"].answer == "2"
    for key, needle in [
        ("bad-logprobs", "logprobs"),
        ("submit-fails", "submitting the request failed"),
        ("bad-finish", "unknown finish"),
    ]:
        r = results[key]
        assert r.finish_reason == "error" and needle in r.error, (key, r.error)
        t = r.trajectory
        assert len(t.token_ids) == len(t.loss_mask) == len(t.logprobs)
    # the completion with the wrong logprobs was rejected whole: no token of it entered the trajectory
    assert results["bad-logprobs"].num_model_tokens == 0 and results["bad-logprobs"].tool_calls == []
    # a lone surrogate in a cell's output is replaced, not fatal
    r = results["surrogate"]
    assert r.finish_reason == "final" and "\ufffd lone" in r.tool_calls[0].output
    assert len(pool.sessions) == 3 and all(s.closed for s in pool.sessions)  # fine, surrogate, submit-fails


# -- 3. cleanup steps are independent; the original error propagates -------------------------------------------


class DyingEngine(ScriptedEngine):
    def __init__(self, *a, die_at_step: int, **kw):
        super().__init__(*a, **kw)
        self.die_at_step = die_at_step

    def step(self):
        if self.steps + 1 >= self.die_at_step:
            raise RuntimeError("CUDA error: device lost")
        return super().step()

    def abort(self, request_ids):
        raise RuntimeError("engine is dead")


def test_3_engine_failure_raises_with_the_unfinished_tasks_and_closes_every_session():
    slow = "<|channel|>analysis<|message|>" + "x " * 200 + "<|end|>"
    engine = DyingEngine(by_problem({"a": (CALL_2, slow), "b": (CALL_2, slow)}), die_at_step=6)
    agent, _, pool = make_agent(None, engine=engine)
    tasks = [Task("a", key="a"), Task("b", key="b")]
    with pytest.raises(EngineFailure, match="device lost") as info:
        run_all(agent, tasks)
    assert [t.key for t in info.value.unfinished] == ["a", "b"]
    assert "device lost" in str(info.value.__cause__)
    assert pool.sessions and all(s.closed for s in pool.sessions)


def test_3_abort_raising_does_not_stop_closing_sessions_when_the_stream_is_closed():
    slow = "<|channel|>analysis<|message|>" + "x " * 400 + "<|end|>"
    engine = DyingEngine(by_problem({"slow": (CALL_2, slow)}), die_at_step=10**9)
    agent, _, pool = make_agent(None, engine=engine)
    stream = agent.stream([Task("quick"), Task("slow")])
    task, _ = next(stream)
    for _ in range(3):  # give the slow one its call
        time.sleep(0.05)
    stream.close()  # abort raises inside; sessions are closed anyway and close() itself does not raise
    assert all(s.closed for s in pool.sessions)


# -- 4. a stale call is never run again ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tail",
    [
        "<|end|><|start|>assistant<|call|>",
        "<|end|><|call|>",
        "<|end|><|start|>assistant<|channel|>analysis to=python<|call|>",
    ],
)
def test_4_a_call_token_outside_a_message_is_malformed_not_a_rerun(tail):
    stale = "<|channel|>analysis to=python code<|message|>print('once')" + tail
    agent, _, pool = make_agent(by_turn(stale, FINAL_2))
    r = run_all(agent, [Task("q", key=0)])[0]
    assert pool.log == [] and r.tool_calls == []
    reply = [m for m in r.messages if m.author.role.value == "tool"][0]
    assert "could not be parsed" in reply.content[0].text
    assert r.finish_reason == "final"


def test_4_parser_reports_the_call_only_for_the_message_it_ends():
    ids = toks("<|channel|>analysis to=python code<|message|>x=1<|end|><|start|>assistant<|call|>")
    parsed = parse_completion(ids)
    assert parsed.call is not None and parsed.call.error and parsed.call.text == ""
    assert [m.content[0].text for m in parsed.messages] == ["x=1"]


# -- 5. replies are tool messages from a safe author on a valid channel ------------------------------------------


@pytest.mark.parametrize("recipient", ["user", "system", "developer", "assistant", "assistant.x", "tool"])
def test_5_a_call_to_a_role_is_answered_by_a_tool_not_by_that_role(recipient):
    agent, _, pool = make_agent(by_turn(f"<|channel|>analysis to={recipient} code<|message|>hi<|call|>"))
    r = run_all(agent, [Task("q", key=0)])[0]
    tool_segment = next(s for s in r.trajectory.segments if s.kind == "tool")
    text = get_encoding().decode(r.trajectory.token_ids[tool_segment.start : tool_segment.end])
    assert text.startswith("<|start|>python to=assistant<|channel|>analysis<|message|>Error: there is no tool")
    assert pool.log == []


def test_5_garbled_channels_are_not_echoed_and_long_names_are_bounded():
    garbled = "<|channel|>" + "zq" * 1500 + " to=python code<|message|>print(1)<|call|>"
    long_name = "<|channel|>commentary to=" + "n" * 80_000 + "<|message|>x<|call|>"
    agent, _, pool = make_agent(by_turn(garbled, long_name, FINAL_2))
    r = run_all(agent, [Task("q", key=0)])[0]
    replies = [m for m in r.messages if m.author.role.value == "tool"]
    assert [m.channel for m in replies] == ["analysis", "commentary"]
    assert pool.log == ["print(1)"]  # the call itself is valid python on a weird channel
    tool_tokens = [len(s) for s in r.trajectory.segments if s.kind == "tool"]
    assert max(tool_tokens) < 100, tool_tokens  # the 80,000-character name is quoted in 64 characters
    assert replies[1].author.name == "python" and "..." in replies[1].content[0].text


# -- 6. per-turn work proportional to the new tokens -----------------------------------------------------------


def test_6_parsing_a_huge_header_costs_about_what_parsing_content_costs():
    enc = get_encoding()
    filler = enc.encode(" alpha beta", allowed_special=set()) * 30_000
    header = [200005, *filler, 200008, 200007]  # <|channel|> + 60k tokens of header + <|message|><|end|>
    content = [200005, 35644, 200008, *filler, 200007]
    t_header = min(_timed(lambda: parse_completion(header)) for _ in range(2))
    t_content = min(_timed(lambda: parse_completion(content)) for _ in range(2))
    assert t_header < 5 * t_content + 0.05, (t_header, t_content)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def test_6_token_counts_are_counters_and_survive_serialization():
    t = Trajectory.from_prompt([1, 2])
    for _ in range(1000):
        t.append_model([3, 4], None)
        t.append_tool([5])
    assert (t.num_model_tokens, t.num_tool_tokens) == (2000, 1000)
    t.segments = None  # type: ignore[assignment] - reading the counts must not walk the segments
    assert t.num_model_tokens == 2000
    t.segments = [s for s in Trajectory.from_dict(Trajectory.from_prompt([1]).to_dict()).segments]
    back = Trajectory.from_dict(
        {
            "token_ids": [1, 2, 3],
            "loss_mask": [0, 1, 0],
            "logprobs": [0, -1, 0],
            "prompt_len": 1,
            "segments": [["prompt", 0, 1], ["model", 1, 2], ["tool", 2, 3]],
        }
    )
    assert (back.num_model_tokens, back.num_tool_tokens) == (1, 1)


def test_6_the_prompt_is_rendered_once_per_problem_for_its_samples(monkeypatch):
    from harmony_agent import agent as agent_module

    calls = []
    real = agent_module.render_prompt
    monkeypatch.setattr(agent_module, "render_prompt", lambda p, c: calls.append(p) or real(p, c))
    agent, engine, _ = make_agent(by_turn(FINAL_2))
    results = bounded(lambda: agent.run(["p1", "p2"], n=8, seed=0))
    assert calls == ["p1", "p2"] and len(results[0]) == len(results[1]) == 8
    assert all(r.trajectory.prompt_ids == real("p1", agent.prompt) for r in results[0])


def test_6_requests_share_the_trajectory_instead_of_copying_it():
    agent, engine, _ = make_agent(by_turn(CALL_2, CALL_2, FINAL_2))
    r = run_all(agent, [Task("q", key=0)])[0]
    first, second, third = engine.submitted
    assert second.prompt_ids[: len(first.prompt_ids)] == first.prompt_ids  # a view: unchanged by later appends
    assert third.prompt_ids == r.trajectory.token_ids[: len(third.prompt_ids)]
    assert len(first.prompt_ids) < len(second.prompt_ids) < len(third.prompt_ids)


# -- 7. a call on the last budget token is not executed -----------------------------------------------------------


def test_7_a_call_on_the_last_budget_token_is_not_run():
    agent, _, pool = make_agent(by_turn(CALL_2), max_tokens=len(toks(CALL_2)))
    r = run_all(agent, [Task("q", key=0)])[0]
    assert r.finish_reason == "length" and pool.log == [] and r.tool_calls == []
    assert r.trajectory.token_ids[-1] == CALL and r.num_model_tokens == len(toks(CALL_2))


@pytest.mark.parametrize("spare", [0, 5])
def test_7_a_call_whose_reply_cannot_fit_the_context_is_not_run(spare):
    prompt_len = len(render_prompt("q", PromptConfig(conversation_start_date=DATE)))
    agent, _, pool = make_agent(by_turn(CALL_2), max_model_len=prompt_len + len(toks(CALL_2)) + spare)
    r = run_all(agent, [Task("q", key=0)])[0]
    assert r.finish_reason == "context" and pool.log == [] and r.tool_calls == []


# -- 8. closing a stream returns at once ----------------------------------------------------------------------------


def test_8_closing_while_a_session_is_opening_returns_at_once_and_closes_it_later():
    opening = threading.Event()

    class SlowOpen(InProcessPool):
        def open(self):
            opening.set()
            time.sleep(3)
            return super().open()

    long_final = "<|channel|>final<|message|>" + "y " * 300 + "<|return|>"

    def respond(prompt_ids, turn):
        return toks(long_final if "later" in get_encoding().decode(prompt_ids) else CALL_2)

    agent, _, pool = make_agent(respond, pool=SlowOpen())
    stream = agent.stream([Task("slow"), Task("later")])  # "later" finishes after the slow call started
    next(stream)
    assert opening.wait(10)
    start = time.monotonic()
    stream.close()
    assert time.monotonic() - start < 1.0
    deadline = time.monotonic() + 10
    while not pool.sessions and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)
    assert pool.sessions and all(s.closed for s in pool.sessions) and pool.log == []


# -- 9. tool failures are data ---------------------------------------------------------------------------------------


def test_9_a_runtime_failure_is_a_record_with_its_own_status():
    class Broken(InProcessPool):
        def open(self):
            raise OSError("template died: cannot import IPython")

    agent, _, _ = make_agent(by_turn(CALL_2, FINAL_2), pool=Broken())
    r = run_all(agent, [Task("q", key=0)])[0]
    [record] = r.tool_calls
    assert record.status == "runtime_error" and "cannot import IPython" in record.error
    assert record.code == "print(pow(2, 100, 7))" and record.output.startswith("Error: the python tool failed")


def test_9_a_pool_that_cannot_start_fails_the_run_at_once(monkeypatch):
    import tool_runtime

    def broken_pool(*args, **kwargs):
        raise RuntimeError("template failed to start: No module named 'IPython'")

    monkeypatch.setattr(tool_runtime, "SessionPool", broken_pool)
    engine = ScriptedEngine(by_turn(CALL_2, FINAL_2))
    agent = Agent(engine=engine, conversation_start_date=DATE)
    with pytest.raises(ToolRuntimeError, match="No module named 'IPython'.*python=False"):
        agent.run(["q"])
    assert engine.submitted == []  # nothing was generated
    without = Agent(engine=ScriptedEngine(by_turn(FINAL_2)), python=False, conversation_start_date=DATE)
    assert without.run(["q"])[0][0].finish_reason == "final"


def test_9_a_closed_pool_fails_the_run_at_once_and_closing_it_mid_run_ends_the_run():
    class Closable(InProcessPool):
        closed = False

    pool = Closable()
    pool.closed = True
    agent, engine, _ = make_agent(by_turn(CALL_2, FINAL_2), pool=pool)
    with pytest.raises(ToolRuntimeError, match="is closed"):
        agent.run(["q"])
    assert engine.submitted == []

    pool = Closable()
    slow_call = "<|channel|>analysis<|message|>" + "x " * 100 + "<|end|><|start|>assistant" + CALL_2
    agent, engine, _ = make_agent(by_problem({"calls": (slow_call,)}), pool=pool)
    stream = agent.stream([Task("quick"), Task("calls")])
    assert next(stream)[0].problem == "quick"
    pool.closed = True  # closed after the run started, before the first call
    with pytest.raises(ToolRuntimeError, match="closed during the run"):
        bounded(lambda: list(stream))


# -- 10. footguns for RL users -----------------------------------------------------------------------------------------


def test_10_run_without_seed_samples_anew_and_records_the_seed():
    agent, engine, _ = make_agent(by_turn(FINAL_2))
    a = bounded(lambda: agent.run(["q"], n=2))
    b = bounded(lambda: agent.run(["q"], n=2))
    seeds = [r.seed for row in a + b for r in row]
    assert len(set(seeds)) == 4 and all(isinstance(s, int) for s in seeds)
    assert seeds[1] == seeds[0] + 1
    assert [r.seed for r in engine.submitted] == seeds
    again = bounded(lambda: agent.run(["q"], n=2, seed=a[0][0].seed))
    assert [r.seed for r in again[0]] == seeds[:2]


def test_10_run_takes_any_iterable_and_stream_takes_a_generator():
    agent, _, _ = make_agent(by_turn(FINAL_2))
    results = bounded(lambda: agent.run((f"p{i}" for i in range(3)), seed=1))
    assert [row[0].problem for row in results] == ["p0", "p1", "p2"]
    done = bounded(lambda: list(agent.stream(Task(f"p{i}", key=i) for i in range(40))))
    assert sorted(t.key for t, _ in done) == list(range(40))


def test_10_a_request_id_collision_ends_that_trajectory_with_an_error_not_silently():
    class Constant(ScriptedEngine):
        def new_request_id(self):
            return "same"

    engine = Constant(by_turn(FINAL_2), tokens_per_step=1)
    agent, _, _ = make_agent(None, engine=engine)
    results = run_all(agent, [Task(f"p{i}", key=i) for i in range(3)])
    assert sorted(results) == [0, 1, 2]
    reasons = sorted(r.finish_reason for r in results.values())
    assert reasons == ["error", "error", "final"]
    assert all("already in use" in r.error for r in results.values() if r.error)


def test_10_two_runs_on_one_engine_never_share_request_ids():
    engine = ScriptedEngine(by_turn(FINAL_2))
    a, _, _ = make_agent(None, engine=engine)
    b, _, _ = make_agent(None, engine=engine)
    s1, s2 = a.stream([Task("x"), Task("y")]), b.stream([Task("z")])
    done = bounded(lambda: [*s1, *s2])
    assert len(done) == 3
    ids = [r.request_id for r in engine.submitted]
    assert len(ids) == len(set(ids))


def test_10_messages_input_dicts_and_harmony_messages():
    from openai_harmony import Message, Role

    agent, engine, _ = make_agent(by_turn(FINAL_2), developer_instructions="Be brief.")
    history = [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Bonjour"},
        {"role": "user", "content": [{"type": "text", "text": "What is 1+1?"}]},
    ]
    harmony_history = [Message.from_role_and_content(Role.USER, "Hi")]
    results = bounded(lambda: agent.run([history, harmony_history, "Hi"], seed=0))
    text = get_encoding().decode(results[0][0].trajectory.prompt_ids)
    assert "# Instructions\n\nBe brief.\n\nAnswer in French.<|end|>" in text
    assert text.endswith(
        "<|start|>user<|message|>Hi<|end|><|start|>assistant<|channel|>final<|message|>Bonjour"
        "<|end|><|start|>user<|message|>What is 1+1?<|end|><|start|>assistant"
    )
    assert results[1][0].trajectory.prompt_ids == results[2][0].trajectory.prompt_ids
    assert results[0][0].problem == history and results[0][0].answer == "2"


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"role": "user", "content": "x"}, "wrap the conversation in a list"),
        ([{"role": "tool", "content": "x"}], "role 'tool'; valid: system, developer, user, assistant"),
        ([{"role": "user", "content": 3}], "'content' must be a string"),
        ([], "non-empty list"),
        ([object()], "use openai_harmony.Message or a dict"),
        ("lone \ud800 surrogate", "the problem is not valid text"),
        ([{"role": "user", "content": "x\udfff"}], "message 0 is not valid text"),
    ],
)
def test_10_bad_messages_fail_before_anything_runs(bad, match):
    agent, engine, _ = make_agent(by_turn(FINAL_2))
    with pytest.raises((TypeError, ValueError), match=match):
        agent.run([bad])
    assert engine.submitted == []


def test_10_solve_takes_n_and_messages(monkeypatch):
    from harmony_agent import agent as agent_module

    monkeypatch.setattr(agent_module, "_ENGINES", {})
    monkeypatch.setattr(
        agent_module.VLLMEngine,
        "from_model",
        staticmethod(lambda model, **kw: ScriptedEngine(by_turn(CALL_2, FINAL_2))),
    )
    pool = InProcessPool()
    rows = agent_module.solve("q", model="m", n=3, seed=5, session_pool=pool)
    assert [r.seed for r in rows] == [5, 6, 7] and all(r.answer == "2" for r in rows)
    one = agent_module.solve([{"role": "user", "content": "q"}], model="m", session_pool=pool)
    assert one.answer == "2" and isinstance(one.seed, int)


# -- 11. one source of configuration ----------------------------------------------------------------------------------


def test_11_defaults_are_defined_once_in_config():
    import pathlib
    import re

    from harmony_agent import config

    package = pathlib.Path(config.__file__).parent
    literals = {"120000", "120_000", "10.0", "1000", "256"}
    for path in package.glob("*.py"):
        if path.name in {"config.py", "testing.py", "demo.py", "render.py"}:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            for literal in literals:
                assert not re.search(rf"(?<![\w.]){re.escape(literal)}(?![\w.])", code) or "doctest" in line, (
                    f"{path.name}:{number} repeats a default: {line.strip()}"
                )
    agent, _, _ = make_agent(by_turn(FINAL_2))
    assert agent.config == config.LoopConfig() and agent.sampling == config.Sampling()


def test_in_process_session_exit_raises_system_exit():
    """The suite's in-process session lets model code's exit() raise SystemExit (what item 1 guards against)."""
    with pytest.raises(SystemExit):
        InProcessSession([]).run("exit()")


def test_2_out_of_vocabulary_tokens_end_only_their_trajectory():
    class OutOfVocab(ScriptedEngine):
        def step(self):
            out = []
            for c in super().step():
                prompt = next(list(r.prompt_ids) for r in self.submitted if r.request_id == c.request_id)
                if "oov" in get_encoding().decode(prompt):
                    c = Completion(c.request_id, [250_000, *c.token_ids], [-1.0, *c.logprobs], c.finish)
                out.append(c)
            return out

    agent, _, pool = make_agent(None, engine=OutOfVocab(by_turn(CALL_2, FINAL_2)))
    results = run_all(agent, [Task("oov", key="oov"), Task("fine", key="fine")])
    assert results["oov"].finish_reason == "error" and "250000" in results["oov"].error
    assert results["fine"].finish_reason == "final" and results["fine"].answer == "2"
    assert all(s.closed for s in pool.sessions)


def test_the_rollout_unit_is_driven_the_same_way_without_the_scheduler():
    """Issue 13's AsyncAgent will drive Rollout from asyncio: the unit needs no Scheduler, only a driver that
    submits its requests, feeds back completions and runs its calls (here: asyncio + an executor)."""
    import asyncio

    from harmony_agent import LoopConfig, Phase, Rollout
    from harmony_agent.rollout import run_tool_call

    engine = ScriptedEngine(by_turn(CALL_2, FINAL_2), tokens_per_step=10_000)
    pool = InProcessPool()
    prompt = render_prompt("q", PromptConfig(conversation_start_date=DATE))

    async def drive() -> Rollout:
        r = Rollout("task", prompt, loop=LoopConfig(), python=True, max_model_len=100_000, seed=1, problem="q")
        loop = asyncio.get_running_loop()
        n = 0
        while r.phase is not Phase.FINISHED:
            if r.phase is Phase.READY:
                request = r.next_request(f"async-{n}")
                n += 1
                if request is None:
                    break
                engine.submit(request, None)
                [completion] = engine.step()
                r.on_completion(completion)
            elif r.phase is Phase.TOOL:
                outcome = await loop.run_in_executor(None, run_tool_call, r, r.call, pool.open, 1.0)
                r.on_tool_outcome(outcome)
        return r

    r = asyncio.run(drive())
    assert r.result.finish_reason == "final" and r.result.answer == "2"
    assert [c.output for c in r.result.tool_calls] == ["2\n"]
    agent, _, _ = make_agent(by_turn(CALL_2, FINAL_2))
    [[same]] = agent.run(["q"], seed=1)
    assert same.trajectory.token_ids == r.trajectory.token_ids  # one logic, two drivers, the same tokens
