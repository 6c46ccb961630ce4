"""build_llm's arguments and errors, without loading a model (vllm.LLM replaced by a recorder)."""
from __future__ import annotations

import pytest

import vllm
from harmony_agent import EngineError, build_llm


class Recorder:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


def test_hub_names_and_local_folders_reach_vllm_with_token_io_defaults(monkeypatch, tmp_path):
    monkeypatch.setattr(vllm, "LLM", Recorder)
    llm = build_llm("openai/gpt-oss-20b", tensor_parallel_size=2)
    assert llm.kwargs["model"] == "openai/gpt-oss-20b" and llm.kwargs["tensor_parallel_size"] == 2
    assert llm.kwargs["skip_tokenizer_init"] is True and llm.kwargs["enable_prefix_caching"] is True
    assert llm.kwargs["kv_cache_memory_bytes"] == 1 << 30  # vLLM's CPU build needs an explicit KV size
    assert build_llm(str(tmp_path), kv_cache_memory_bytes=5).kwargs["kv_cache_memory_bytes"] == 5


def test_a_missing_local_folder_is_named(monkeypatch):
    monkeypatch.setattr(vllm, "LLM", Recorder)
    with pytest.raises(EngineError, match="does not exist"):
        build_llm("/no/such/model")


def test_a_model_vllm_cannot_load_is_one_clear_error(monkeypatch):
    def fail(**kwargs):
        raise OSError("no config.json")
    monkeypatch.setattr(vllm, "LLM", fail)
    with pytest.raises(EngineError, match="cannot load model 'org/missing'.*HF_HUB_OFFLINE"):
        build_llm("org/missing")
