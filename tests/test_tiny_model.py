"""The tiny Harmony test model (harmony_agent/testing.py) replays its scripts token-exactly, in both architectures.

These tests are about the fixture itself, not the agent loop: they drive the scripted transcripts by hand
(completion, then the expected tool tokens appended, then the next completion) on transformers and on the real
vLLM engine, under several prompt variants (reasoning effort, python on/off, today's date and far-off dates,
with and without the AIME suffix). The gpt-oss model also shows that its sliding-window layer matters and that
vLLM computes it as transformers does.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from harmony_agent import testing as tiny
from harmony_agent.prompt import PromptConfig

#: Prompt variants: today's date (the default), dates inside and far outside the trained range, each effort.
CONFIGS = [
    PromptConfig(),
    PromptConfig(reasoning_effort="low", conversation_start_date="2031-07-15"),
    PromptConfig(reasoning_effort="medium", conversation_start_date="1970-01-01"),
    PromptConfig(reasoning_effort="high", conversation_start_date="2345-12-31"),
    PromptConfig(reasoning_effort="medium", python=False, conversation_start_date="2024-02-29"),
]
SUFFIXES = ["", tiny.AIME_SUFFIX]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=tiny.ARCHITECTURES)
def built(request):
    """``.arch`` and ``.path`` of the tiny model in each architecture."""
    fixture = "tiny_model_path" if request.param == "llama" else "tiny_gptoss_path"
    return SimpleNamespace(arch=request.param, path=request.getfixturevalue(fixture))


# ---------------------------------------------------------------------------------------------------------------
# The scripts themselves


def test_scripts_shape():
    assert len(tiny.SCRIPTED_PROBLEMS) >= 3
    assert len({p.problem for p in tiny.TRAINED_SCRIPTS}) == len(tiny.TRAINED_SCRIPTS)
    assert any(len(p.calls) >= 2 for p in tiny.SCRIPTED_PROBLEMS)
    for entry in tiny.SCRIPTED_PROBLEMS:
        assert entry.calls and isinstance(entry.answer, str) and entry.unknown_call is None
        model, tools = tiny.expected_transcript(entry)
        assert len(model) == len(entry.calls) + 1 and len(tools) == len(entry.calls)
        assert all(seg[-1] == tiny.CALL for seg in model[:-1]) and model[-1][-1] == tiny.RETURN
        assert all(t not in tiny.STOP_TOKEN_IDS for seg in model for t in seg[:-1])
    unknown = tiny.UNKNOWN_RECIPIENT_PROBLEM
    model, tools = tiny.expected_transcript(unknown)
    assert unknown.answer is None and not unknown.calls and len(model) == 1 and tools == []
    with pytest.raises(AttributeError):
        tiny.SCRIPTED_PROBLEMS[0].answer = "3"  # frozen


def test_model_tokens_are_the_harmony_texts():
    from harmony_agent.encoding import get_encoding

    enc = get_encoding()
    entry = tiny.SCRIPTED_PROBLEMS[0]
    model, tools = tiny.expected_transcript(entry)
    assert enc.decode(model[0]) == (
        "<|channel|>analysis<|message|>Use pow with a modulus.<|end|><|start|>assistant"
        "<|channel|>analysis to=python code<|message|>print(pow(2, 100, 7))<|call|>"
    )
    assert (
        enc.decode(tools[0]) == "<|start|>python to=assistant<|channel|>analysis<|message|>2\n<|end|><|start|>assistant"
    )
    assert tools[0][-2:] == [200006, 173781]
    assert enc.decode(model[1]) == "<|channel|>final<|message|>The answer is \\boxed{2}.<|return|>"
    unknown, _ = tiny.expected_transcript(tiny.UNKNOWN_RECIPIENT_PROBLEM)
    assert enc.decode(unknown[0]).endswith(
        '<|channel|>commentary to=functions.lookup <|constrain|>json<|message|>{"query": "population of Mars"}<|call|>'
    )
    # The transcript's prompt is the project's rendering.
    from harmony_agent.prompt import render_prompt

    config = PromptConfig(conversation_start_date="2025-01-01")
    segments = tiny.transcript_segments(entry, config)
    assert [kind for kind, _ in segments] == ["prompt", "model", "tool", "model"]
    assert segments[0][1] == render_prompt(entry.problem, config)
    assert tiny.transcript_ids(entry, config) == [t for _, ids in segments for t in ids]


def test_outputs_are_what_the_code_prints():
    """Each script's cells, run in one namespace (state persists between calls), print the scripted outputs."""
    for entry in tiny.SCRIPTED_PROBLEMS:
        namespace: dict = {}
        for code, output in entry.calls:
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                exec(compile(code, "<cell>", "exec"), namespace)
            assert buf.getvalue() == output
        assert entry.calls[-1][1].strip() == entry.answer


# ---------------------------------------------------------------------------------------------------------------
# The built folder


def test_build_folder(built):
    model_dir = built.path
    config = json.loads((model_dir / "config.json").read_text())
    eos = json.loads((model_dir / "generation_config.json").read_text())["eos_token_id"]
    assert config["vocab_size"] == 201088 and config["head_dim"] >= 32
    if built.arch == "llama":
        assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"]
        assert config["max_position_embeddings"] == 4096 and eos == 200002
    else:  # the real models' shape, in miniature
        assert config["architectures"] == ["GptOssForCausalLM"] and not config["tie_word_embeddings"]
        assert config["layer_types"] == ["sliding_attention", "full_attention"] and config["sliding_window"] == 128
        assert (config["num_local_experts"], config["num_experts_per_tok"]) == (4, 2)
        assert config["num_attention_heads"] > config["num_key_value_heads"]
        assert config["max_position_embeddings"] == 131072 and config["rope_parameters"]["rope_type"] == "yarn"
        assert eos == [200002, 199999, 200012]  # as gpt-oss-20b/120b's generation_config.json
    assert (model_dir / "model.safetensors").is_file()
    assert not list(model_dir.glob("tokenizer*"))  # the engine runs with skip_tokenizer_init=True
    marker = json.loads((model_dir / tiny.MARKER).read_text())
    assert marker["recipe"] == tiny.recipe_key(arch=built.arch) and marker["arch"] == built.arch
    assert tiny.recipe_key(arch="llama") != tiny.recipe_key(arch="gpt_oss")


def test_build_is_cached(built, tmp_path):
    model_dir = built.path
    assert model_dir == tiny.default_cache_dir(built.arch)
    start = time.monotonic()
    assert tiny.build(model_dir, arch=built.arch) == model_dir
    assert time.monotonic() - start < 20  # the recipe key is checked, nothing is trained
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / tiny.MARKER).write_text(json.dumps({"recipe": "something else"}))
    key = tiny.recipe_key(arch=built.arch)
    assert tiny._is_built(model_dir, key) and not tiny._is_built(stale, key)
    assert not tiny._is_built(tmp_path / "missing", key)


def test_unknown_architecture_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="unknown tiny-model architecture 'mamba': use one of llama, gpt_oss"):
        tiny.build(tmp_path / "m", arch="mamba")
    assert not (tmp_path / "m").exists()


def test_build_refuses_to_replace_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        tiny.build(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_default_cache_dir_respects_env(monkeypatch, tmp_path):
    monkeypatch.setenv(tiny.CACHE_ENV, str(tmp_path))
    assert tiny.default_cache_dir() == tmp_path / "tiny-harmony-model"
    assert tiny.default_cache_dir("gpt_oss") == tmp_path / "tiny-harmony-gpt-oss"
    monkeypatch.delenv(tiny.CACHE_ENV)
    assert tiny.default_cache_dir().name == "tiny-harmony-model"


def test_only_scripted_rows_are_nonzero(built):
    from safetensors.torch import load_file

    weights = load_file(str(built.path / "model.safetensors"))
    rows = ["model.embed_tokens.weight"] + (["lm_head.weight"] if built.arch == "gpt_oss" else [])  # llama: tied
    used = {t for ids, _, _ in tiny.training_sequences() for t in ids}
    for name in rows:
        assert tuple(weights[name].shape) == (201088, 64)
        assert set(weights[name].abs().sum(1).nonzero().flatten().tolist()) == used, name


# ---------------------------------------------------------------------------------------------------------------
# transformers: teacher-forced argmax over the full vocabulary == greedy replay


def test_transformers_greedy_replays_every_script(built):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(built.path, dtype=torch.float32).eval()
    configs = CONFIGS if built.arch == "llama" else CONFIGS[::2]  # CI time; vLLM replays gpt-oss on all of them
    for entry in tiny.TRAINED_SCRIPTS:
        for config in configs:
            for suffix in SUFFIXES:
                segments = tiny.transcript_segments(entry, config, problem=entry.problem + suffix)
                ids = [t for _, seg in segments for t in seg]
                is_model = [kind == "model" for kind, seg in segments for _ in seg]
                with torch.no_grad():
                    logits = model(torch.tensor([ids])).logits[0].float()
                positions = [p for p in range(1, len(ids)) if is_model[p]]
                top2 = logits[[p - 1 for p in positions]].topk(2, dim=-1)
                predicted = top2.indices[:, 0].tolist()
                assert predicted == [ids[p] for p in positions], (entry.problem, config, suffix)
                gap = (top2.values[:, 0] - top2.values[:, 1]).min().item()
                assert gap > 1.0, (entry.problem, config, suffix, gap)


# ---------------------------------------------------------------------------------------------------------------
# The real vLLM engine


def _replay(llm, cases):
    """Drive each (entry, config, user text) through its script in lockstep batches; return mismatches."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    states = []
    for entry, config, text in cases:
        model, tools = tiny.expected_transcript(entry)
        states.append(
            {
                "case": (entry.problem, config, text),
                "ids": tiny.prompt_ids(text, config),
                "model": model,
                "tools": tools,
                "step": 0,
            }
        )
    max_tokens = max(len(seg) for s in states for seg in s["model"]) + 32
    params = SamplingParams(
        temperature=0, max_tokens=max_tokens, stop_token_ids=list(tiny.STOP_TOKEN_IDS), detokenize=False
    )
    failures = []
    live = states
    while live:
        outs = llm.generate([TokensPrompt(prompt_token_ids=s["ids"]) for s in live], params, use_tqdm=False)
        nxt = []
        for state, out in zip(live, outs):
            completion = out.outputs[0]
            got, want = list(completion.token_ids), state["model"][state["step"]]
            if got != want:
                failures.append((state["case"], state["step"], got, want))
                continue
            assert completion.finish_reason == "stop" and completion.stop_reason == want[-1]
            if state["step"] < len(state["tools"]):
                state["ids"] = state["ids"] + got + state["tools"][state["step"]]
                state["step"] += 1
                if state["step"] < len(state["model"]):
                    nxt.append(state)
        live = nxt
    return failures


ALL_CASES = [
    (entry, config, entry.problem + suffix)
    for entry in tiny.TRAINED_SCRIPTS
    for config in CONFIGS
    for suffix in SUFFIXES
]


def _engine_dtype(llm) -> str:
    return str(llm.llm_engine.model_config.dtype).replace("torch.", "")


def test_vllm_greedy_replays_every_script(arch_llm):
    """On the session's shared engines (conftest's ``arch_llm``: one engine per architecture and process)."""
    assert _replay(arch_llm, ALL_CASES) == []


def test_vllm_one_request_at_a_time(arch_llm):
    """Unbatched, as a single notebook call runs it (the batched test above has cached these prefixes)."""
    config = PromptConfig(reasoning_effort="low")
    for entry in tiny.SCRIPTED_PROBLEMS:
        assert _replay(arch_llm, [(entry, config, entry.problem)]) == []


def test_gptoss_sliding_window_is_exercised_and_computed_as_transformers_does(tiny_gptoss_llm, tiny_gptoss_path):
    """The scripts run past the 128-token window; vLLM's logprobs match transformers' with the window, not without.

    Teacher-forced over a whole transcript (prompt, completions, tool tokens): transformers with the model's
    layer types, and with the sliding layer turned into full attention. Before position 128 both agree; after
    it they differ, and vLLM (prompt_logprobs of the same tokens) agrees with the windowed one.
    """
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    entry = next(p for p in tiny.SCRIPTED_PROBLEMS if len(p.calls) == 2)
    ids = tiny.transcript_ids(entry, PromptConfig(conversation_start_date="2025-01-01"))
    window = json.loads((tiny_gptoss_path / "config.json").read_text())["sliding_window"]
    assert len(ids) > 2 * window

    def transformers_logprobs(**overrides):
        model = AutoModelForCausalLM.from_pretrained(tiny_gptoss_path, dtype=torch.float32, **overrides).eval()
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, :-1].double()
        return logits.log_softmax(-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]

    windowed = transformers_logprobs()
    full = transformers_logprobs(layer_types=["full_attention", "full_attention"])
    [out] = tiny_gptoss_llm.generate(
        [TokensPrompt(prompt_token_ids=ids)],
        SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False),
        use_tqdm=False,
    )
    vllm_lp = torch.tensor([out.prompt_logprobs[i][ids[i]].logprob for i in range(1, len(ids))], dtype=torch.float64)
    inside, beyond = slice(0, window - 1), slice(window, None)  # logprob i predicts token i + 1
    assert (windowed[inside] - full[inside]).abs().max() < 1e-4
    assert (windowed[beyond] - full[beyond]).abs().max() > 0.1, "the window changes nothing: not exercised"
    assert (vllm_lp - windowed).abs().max() < 1e-3
    assert (vllm_lp[beyond] - full[beyond]).abs().max() > 0.1


def test_gptoss_context_length_comes_from_the_model(tiny_gptoss_llm, tiny_gptoss_path):
    """No max_model_len given (conftest): the engine and the loop take the model's 131072."""
    from harmony_agent import VLLMEngine

    config = json.loads((tiny_gptoss_path / "config.json").read_text())
    assert VLLMEngine(tiny_gptoss_llm).max_model_len == config["max_position_embeddings"] == 131072


def test_vllm_greedy_replays_in_the_other_dtype(tiny_llm, tiny_model_path):
    """float32 and bfloat16 both replay exactly; the other one runs in its own process (one engine each)."""
    other = "float32" if _engine_dtype(tiny_llm) != "float32" else "bfloat16"
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_LOGGING_LEVEL": "WARNING"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.test_tiny_model", str(tiny_model_path), other],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"dtype": other, "cases": len(ALL_CASES), "failures": []}


def main(argv: list[str]) -> None:
    """``python -m tests.test_tiny_model MODEL_DIR DTYPE``: replay every case on a fresh engine, print JSON."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM

    path, dtype = argv
    llm = LLM(
        model=path,
        skip_tokenizer_init=True,
        enforce_eager=True,
        max_model_len=4096,
        enable_prefix_caching=True,
        kv_cache_memory_bytes=256 << 20,
        dtype=dtype,
    )
    failures = _replay(llm, ALL_CASES)
    print(
        json.dumps(
            {
                "dtype": _engine_dtype(llm),
                "cases": len(ALL_CASES),
                "failures": [[repr(case), step, got, want] for case, step, got, want in failures],
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
