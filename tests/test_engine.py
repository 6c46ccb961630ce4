"""build_llm's arguments and errors, without loading a model (vllm.LLM replaced by a recorder)."""

from __future__ import annotations

import os
import sys

import pytest

from harmony_agent import EngineError, build_llm
from harmony_agent import engine as engine_module


@pytest.fixture
def vllm():
    """vLLM itself, imported by the tests that use it (not at collection: `make test-fast` deselects them)."""
    import vllm

    return vllm


class Recorder:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


def test_hub_names_and_local_folders_reach_vllm_with_token_io_defaults(vllm, monkeypatch, tmp_path):
    monkeypatch.setattr(vllm, "LLM", Recorder)
    llm = build_llm("openai/gpt-oss-20b", tensor_parallel_size=2)
    assert llm.kwargs["model"] == "openai/gpt-oss-20b" and llm.kwargs["tensor_parallel_size"] == 2
    assert llm.kwargs["skip_tokenizer_init"] is True and llm.kwargs["enable_prefix_caching"] is True
    assert llm.kwargs["kv_cache_memory_bytes"] == 1 << 30  # vLLM's CPU build needs an explicit KV size
    assert build_llm(str(tmp_path), kv_cache_memory_bytes=5).kwargs["kv_cache_memory_bytes"] == 5


def test_a_missing_local_folder_is_named(vllm, monkeypatch):
    monkeypatch.setattr(vllm, "LLM", Recorder)
    with pytest.raises(EngineError, match="does not exist"):
        build_llm("/no/such/model")


def test_a_model_vllm_cannot_load_is_one_clear_error(vllm, monkeypatch):
    def fail(**kwargs):
        raise OSError("no config.json")

    monkeypatch.setattr(vllm, "LLM", fail)
    with pytest.raises(EngineError, match="cannot load model 'org/missing'.*HF_HUB_OFFLINE"):
        build_llm("org/missing")


class EnvRecorder(Recorder):
    """Records the multiprocessing setting vLLM would read when the engine is created."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.multiprocessing = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")


def test_cpu_build_starts_the_engine_in_process_unless_the_user_chose(vllm, monkeypatch):
    monkeypatch.setattr(vllm, "LLM", EnvRecorder)
    monkeypatch.setattr(engine_module, "_cpu_platform", lambda: True)
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    assert build_llm("org/model").multiprocessing == "0"  # no __main__ guard needed, starts in ~2 s
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ  # the process's setting is left as it was
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    assert build_llm("org/model").multiprocessing == "1"
    monkeypatch.setattr(engine_module, "_cpu_platform", lambda: False)  # GPU build: vLLM's default
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING")
    assert build_llm("org/model").multiprocessing is None


@pytest.mark.parametrize("guarded", [False, True])
def test_an_engine_start_failure_in_a_script_without_main_guard_says_so(vllm, monkeypatch, tmp_path, guarded):
    script = tmp_path / "run.py"
    body = 'solve("q", model="org/model")\n'
    script.write_text('if __name__ == "__main__":\n    ' + body if guarded else body)
    monkeypatch.setattr(sys.modules["__main__"], "__file__", str(script), raising=False)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")

    def fail(**kwargs):
        raise RuntimeError("Engine core initialization failed. See root cause above.")

    monkeypatch.setattr(vllm, "LLM", fail)
    with pytest.raises(EngineError) as info:
        build_llm("org/model")
    if guarded:
        assert "cannot load model 'org/model'" in str(info.value) and "__main__" not in str(info.value)
    else:
        assert 'if __name__ == "__main__":' in str(info.value)
        assert "VLLM_ENABLE_V1_MULTIPROCESSING=0" in str(info.value) and "cannot load model" not in str(info.value)
