"""Shared pytest setup: offline Harmony vocabulary and local AIME data from ../shared."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"

if "TIKTOKEN_ENCODINGS_BASE" not in os.environ and (SHARED / "vocab" / "o200k_base.tiktoken").exists():
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(SHARED / "vocab")
if "HARMONY_EVAL_DATA" not in os.environ and (SHARED / "data").is_dir():
    os.environ["HARMONY_EVAL_DATA"] = str(SHARED / "data")

# vLLM on CPU: the in-process engine starts in ~2 s instead of ~15 s and needs no __main__ guard.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

import pytest  # noqa: E402

#: Engine settings of the real-engine tests. float32: bf16 matmuls take a slow fallback path on CPUs without bf16
#: instructions (the Llama replays exactly in both; tests/test_tiny_model.py checks bf16 in a child process).
#: No max_model_len: the context length comes from the model (4096 for the Llama, 131072 for gpt-oss).
TINY_ENGINE_KWARGS = dict(skip_tokenizer_init=True, enforce_eager=True, enable_prefix_caching=True,
                          kv_cache_memory_bytes=256 << 20, seed=0, dtype="float32")


def _tiny_llm(path):
    from vllm import LLM

    llm = LLM(model=str(path), **TINY_ENGINE_KWARGS)
    yield llm
    del llm
    import gc

    gc.collect()


@pytest.fixture(scope="session")
def tiny_model_path():
    """The scripted tiny Harmony model (Llama), built once and cached (see harmony_agent/testing.py)."""
    from harmony_agent.testing import build

    return build()


@pytest.fixture(scope="session")
def tiny_gptoss_path():
    """The same scripts in the gpt-oss architecture (sliding/full attention with sinks, experts, YaRN)."""
    from harmony_agent.testing import build

    return build(arch="gpt_oss")


@pytest.fixture(scope="session")
def tiny_models(tiny_model_path, tiny_gptoss_path):
    """Both tiny models, built before any engine starts: vLLM's CPU worker binds the process's OpenMP threads and
    makes ``torch.set_num_threads`` a no-op, and training after that crawled here (over 15 min instead of 1)."""
    return {"llama": tiny_model_path, "gpt_oss": tiny_gptoss_path}


@pytest.fixture(scope="session")
def tiny_gptoss_llm(tiny_models):
    """One real vLLM engine over the tiny gpt-oss model: vLLM's gpt-oss model class and hybrid KV-cache manager."""
    yield from _tiny_llm(tiny_models["gpt_oss"])


@pytest.fixture(scope="session")
def tiny_llm(tiny_models, tiny_gptoss_llm):
    """One real vLLM engine (CPU build) over the tiny Llama, shared by every real-engine test of the session.

    Started after the gpt-oss engine: the first engine of a process sets up vLLM's parallel groups, and without
    a mixture-of-experts model among them a later gpt-oss engine fails ("expert parallel group is not
    initialized").
    """
    yield from _tiny_llm(tiny_models["llama"])


@pytest.fixture(scope="session", params=["llama", "gpt_oss"])
def arch_llm(request):
    """The tiny model's engine in each architecture: tests using it run once per architecture."""
    return request.getfixturevalue("tiny_llm" if request.param == "llama" else "tiny_gptoss_llm")
