"""The offline engine in RL use (real vLLM CPU engine, tiny model): a caller's own requests on the shared LLM during
a run come back to the caller; a weight update resets the prefix cache and the next run follows the new weights;
the logprobs mode is checked against the engine."""

from __future__ import annotations

import pytest

from harmony_agent import Agent, EngineError, Task, VLLMEngine
from harmony_agent.testing import SCRIPTED_PROBLEMS, expected_transcript, prompt_ids, transcript_ids

from .rl_helpers import max_sampled_diff, transformers_logprobs


def test_callers_requests_on_a_shared_llm_during_a_run_come_back_to_the_caller(tiny_llm):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    engine = VLLMEngine(tiny_llm)
    entries = [SCRIPTED_PROBLEMS[i % 3] for i in range(6)]
    with Agent(engine=engine, temperature=0.0, max_tokens=400) as agent:
        caller = SCRIPTED_PROBLEMS[1]
        caller_prompt = prompt_ids(caller.problem, agent.prompt)
        first_segment = expected_transcript(caller)[0][0]
        params = SamplingParams(temperature=0.0, max_tokens=8, detokenize=False)
        # one request of the caller's before the run, one while it runs (after its first result)
        tiny_llm.llm_engine.add_request("caller-before", TokensPrompt(prompt_token_ids=caller_prompt), params)
        done = []
        for task, result in agent.stream(Task(e.problem, seed=k, key=k) for k, e in enumerate(entries)):
            if not done:
                tiny_llm.llm_engine.add_request(
                    "caller-during",
                    TokensPrompt(prompt_token_ids=caller_prompt),
                    SamplingParams(temperature=0.0, max_tokens=1, detokenize=False),
                )
            done.append((task, result))
    for task, result in done:  # the run is unaffected
        assert result.trajectory.token_ids == transcript_ids(entries[task.key], agent.prompt)
    others = engine.take_other_outputs()
    finished = {o.request_id: list(o.outputs[0].token_ids) for o in others if o.finished}
    assert finished == {"caller-before": first_segment[:8], "caller-during": first_segment[:1]}
    assert all(o.request_id.startswith("caller-") for o in others)
    assert engine.take_other_outputs() == []
    assert not tiny_llm.llm_engine.has_unfinished_requests()


def test_update_weights_resets_the_prefix_cache_and_the_next_run_follows_the_new_weights(tiny_llm, tiny_model_path):
    from safetensors.torch import load_file

    from harmony_agent.weights import load_weights

    original = load_file(str(tiny_model_path / "model.safetensors"))
    changed = {k: v * 0.5 if "embed_tokens" in k else v * 1.1 if "down_proj" in k else v for k, v in original.items()}
    entry = SCRIPTED_PROBLEMS[2]
    with Agent(llm=tiny_llm, temperature=0.0, max_tokens=400) as agent:
        try:
            [[before]] = agent.run([entry.problem], seed=0)  # its prefix is now cached
            start = before.trajectory.prompt_len
            ids = before.trajectory.token_ids
            assert max_sampled_diff(before, transformers_logprobs(tiny_model_path, original, ids, start), start) < 1e-3

            load_weights(tiny_llm, changed)  # without the reset: KV of the old weights is reused
            [[stale]] = agent.run([entry.problem], seed=0)
            new_reference = transformers_logprobs(tiny_model_path, changed, stale.trajectory.token_ids, start)
            assert max_sampled_diff(stale, new_reference, start) > 1e-3
            agent.weights_updated()  # the hook for weights changed by the caller
            [[after_hook]] = agent.run([entry.problem], seed=0)
            assert max_sampled_diff(after_hook, new_reference, start) < 1e-3

            agent.update_weights(original)
            [[back]] = agent.run([entry.problem], seed=0)
            assert back.trajectory.token_ids == ids
            assert max(abs(a - b) for a, b in zip(back.trajectory.logprobs, before.trajectory.logprobs)) < 1e-5
            [[cached]] = agent.run([entry.problem], seed=0)  # same weights: the cache may serve it again

            agent.update_weights(changed)  # load + reset in one call
            [[after]] = agent.run([entry.problem], seed=0)
            assert after.trajectory.token_ids == stale.trajectory.token_ids
            assert max_sampled_diff(after, new_reference, start) < 1e-3
        finally:
            agent.update_weights(original)
    assert cached.trajectory.token_ids == ids


def test_update_weights_rejects_bad_input_before_touching_the_engine(tiny_llm):
    import torch

    with Agent(llm=tiny_llm, temperature=0.0) as agent:
        with pytest.raises(ValueError, match="no weights given"):
            agent.update_weights({})
        with pytest.raises(TypeError, match=r"\(name, torch.Tensor\) pairs"):
            agent.update_weights([("model.norm.weight", [1.0] * 64)])
        with pytest.raises(ValueError, match=r"'model.norm.weight' has shape \(3,\), the engine's checkpoint has"):
            agent.update_weights({"model.norm.weight": torch.ones(3)})
        with pytest.raises(ValueError, match="'model.nrom.weight' is not a weight of the engine's checkpoint"):
            agent.update_weights({"model.nrom.weight": torch.ones(64)})
        entry = SCRIPTED_PROBLEMS[0]
        [[r]] = agent.run([entry.problem], seed=0)  # the engine still runs on its weights
        assert r.trajectory.token_ids == transcript_ids(entry, agent.prompt)


def test_logprobs_mode_must_match_the_engine(tiny_llm):
    with pytest.raises(EngineError, match=r"returns raw_logprobs .* logprobs_mode='processed_logprobs'"):
        Agent(llm=tiny_llm, logprobs_mode="processed_logprobs")
    Agent(llm=tiny_llm, logprobs_mode="processed_logprobs", logprobs=False).close()  # no logprobs: nothing to check
    with pytest.raises(ValueError, match="is not one of raw_logprobs, processed_logprobs"):
        Agent(llm=tiny_llm, logprobs_mode="raw_logits")
