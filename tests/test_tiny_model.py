"""The tiny Harmony test model (harmony_agent/testing.py) replays its scripts token-exactly.

These tests are about the fixture itself, not the agent loop: they drive the scripted transcripts by hand
(completion, then the expected tool tokens appended, then the next completion) on transformers and on the real
vLLM engine, under several prompt variants (reasoning effort, python on/off, today's date and far-off dates,
with and without the AIME suffix).
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

import pytest

from harmony_agent.prompt import PromptConfig
from harmony_agent import testing as tiny

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


@pytest.fixture(scope="module")
def model_dir(tiny_model_path):
    return tiny_model_path


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
    assert enc.decode(tools[0]) == "<|start|>python to=assistant<|channel|>analysis<|message|>2\n<|end|><|start|>assistant"
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


def test_build_folder(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["vocab_size"] == 201088 and config["head_dim"] >= 32 and config["tie_word_embeddings"]
    assert config["max_position_embeddings"] == 4096
    assert json.loads((model_dir / "generation_config.json").read_text())["eos_token_id"] == 200002
    assert (model_dir / "model.safetensors").is_file()
    assert not list(model_dir.glob("tokenizer*"))  # the engine runs with skip_tokenizer_init=True
    assert json.loads((model_dir / tiny.MARKER).read_text())["recipe"] == tiny.recipe_key()


def test_build_is_cached(model_dir, tmp_path):
    start = time.monotonic()
    assert tiny.build(model_dir) == model_dir
    assert time.monotonic() - start < 20  # the recipe key is checked, nothing is trained
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / tiny.MARKER).write_text(json.dumps({"recipe": "something else"}))
    assert tiny._is_built(model_dir, tiny.recipe_key()) and not tiny._is_built(stale, tiny.recipe_key())
    assert not tiny._is_built(tmp_path / "missing", tiny.recipe_key())


def test_build_refuses_to_replace_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        tiny.build(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_default_cache_dir_respects_env(monkeypatch, tmp_path):
    monkeypatch.setenv(tiny.CACHE_ENV, str(tmp_path))
    assert tiny.default_cache_dir() == tmp_path / "tiny-harmony-model"
    monkeypatch.delenv(tiny.CACHE_ENV)
    assert tiny.default_cache_dir().name == "tiny-harmony-model"


def test_only_scripted_rows_are_nonzero(model_dir):
    from safetensors.torch import load_file

    emb = load_file(str(model_dir / "model.safetensors"))["model.embed_tokens.weight"]
    assert tuple(emb.shape) == (201088, 64)
    used = {t for ids, _, _ in tiny.training_sequences() for t in ids}
    nonzero = set(emb.abs().sum(1).nonzero().flatten().tolist())
    assert nonzero == used


# ---------------------------------------------------------------------------------------------------------------
# transformers: teacher-forced argmax over the full vocabulary == greedy replay


def test_transformers_greedy_replays_every_script(model_dir):
    torch = pytest.importorskip("torch")
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    for entry in tiny.TRAINED_SCRIPTS:
        for config in CONFIGS:
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
        states.append({"case": (entry.problem, config, text), "ids": tiny.prompt_ids(text, config),
                       "model": model, "tools": tools, "step": 0})
    max_tokens = max(len(seg) for s in states for seg in s["model"]) + 32
    params = SamplingParams(temperature=0, max_tokens=max_tokens, stop_token_ids=list(tiny.STOP_TOKEN_IDS),
                            detokenize=False)
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


ALL_CASES = [(entry, config, entry.problem + suffix)
             for entry in tiny.TRAINED_SCRIPTS for config in CONFIGS for suffix in SUFFIXES]


def _engine_dtype(llm) -> str:
    return str(llm.llm_engine.model_config.dtype).replace("torch.", "")


def test_vllm_greedy_replays_every_script(tiny_llm):
    """On the session's shared engine (conftest's ``tiny_llm``: one engine per process)."""
    assert _replay(tiny_llm, ALL_CASES) == []


def test_vllm_one_request_at_a_time(tiny_llm):
    """Unbatched, as a single notebook call runs it (the batched test above has cached these prefixes)."""
    config = PromptConfig(reasoning_effort="low")
    for entry in tiny.SCRIPTED_PROBLEMS:
        assert _replay(tiny_llm, [(entry, config, entry.problem)]) == []


def test_vllm_greedy_replays_in_the_other_dtype(tiny_llm, tiny_model_path):
    """float32 and bfloat16 both replay exactly; the other one runs in its own process (one engine each)."""
    other = "float32" if _engine_dtype(tiny_llm) != "float32" else "bfloat16"
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_LOGGING_LEVEL": "WARNING"}
    proc = subprocess.run([sys.executable, "-m", "tests.test_tiny_model", str(tiny_model_path), other],
                          capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"dtype": other, "cases": len(ALL_CASES), "failures": []}


def main(argv: list[str]) -> None:
    """``python -m tests.test_tiny_model MODEL_DIR DTYPE``: replay every case on a fresh engine, print JSON."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM

    path, dtype = argv
    llm = LLM(model=path, skip_tokenizer_init=True, enforce_eager=True, max_model_len=4096,
              enable_prefix_caching=True, kv_cache_memory_bytes=256 << 20, dtype=dtype)
    failures = _replay(llm, ALL_CASES)
    print(json.dumps({"dtype": _engine_dtype(llm), "cases": len(ALL_CASES),
                      "failures": [[repr(case), step, got, want] for case, step, got, want in failures]}))


if __name__ == "__main__":
    main(sys.argv[1:])
