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


@pytest.fixture(scope="session")
def tiny_model_path():
    """The scripted tiny Harmony model, built once and cached (see harmony_agent/testing.py)."""
    from harmony_agent.testing import build

    return build()


@pytest.fixture(scope="session")
def tiny_llm(tiny_model_path):
    """One real vLLM engine (CPU build) over the tiny model, shared by every real-engine test of the session."""
    from vllm import LLM

    # float32: bf16 matmuls take a slow fallback path on CPUs without bf16 instructions (the model replays
    # exactly in both; tests/test_tiny_model.py checks bf16 in a child process)
    llm = LLM(model=str(tiny_model_path), skip_tokenizer_init=True, enforce_eager=True, max_model_len=4096,
              enable_prefix_caching=True, kv_cache_memory_bytes=256 << 20, seed=0, dtype="float32")
    yield llm
    del llm
    import gc

    gc.collect()
