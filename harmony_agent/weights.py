"""Pushing a trainer's weights into a running vLLM engine (offline ``LLM`` or ``AsyncLLM``).

The weights are given with checkpoint names and shapes (what a transformers model's ``state_dict()`` gives), all
of them or a subset. vLLM's worker method ``reload_weights`` loads them and re-runs the processing done after
loading (the CPU build repacks linear weights, so copying into the parameters directly does not work there). For a
model whose output embedding is tied to its input embedding (``tie_word_embeddings``) it skips the output layer's
processing, so on the CPU build the logits keep coming from the old weights (measured on vLLM 0.32): a small
function run in the worker reloads, then processes the output layer again. That function reaches
the worker through vLLM's ``collective_rpc``: directly when the engine core runs in this process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``), pickled when it runs in another process (``AsyncLLM`` always), which vLLM
allows only with ``VLLM_ALLOW_INSECURE_SERIALIZATION=1`` set before the engine starts. Without it, the weights go
through a safetensors file and ``collective_rpc("reload_weights", weights_path=...)``: exact for models with
separate output embeddings (gpt-oss), refused for tied ones. Resetting the prefix cache afterwards is the caller's job
(``VLLMEngine.update_weights`` and ``AsyncVLLMEngine.update_weights`` do both).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from typing import Any

from .errors import EngineError

logger = logging.getLogger(__name__)

INSECURE_SERIALIZATION_ENV = "VLLM_ALLOW_INSECURE_SERIALIZATION"


def named_tensor_list(named_tensors: Iterable[tuple[str, Any]] | dict) -> list[tuple[str, Any]]:
    """``[(name, tensor), ...]`` detached, contiguous and on the CPU; a clear error for anything else."""
    import torch

    items = list(named_tensors.items()) if isinstance(named_tensors, dict) else list(named_tensors)
    if not items:
        raise ValueError("no weights given: pass (name, tensor) pairs, e.g. model.state_dict().items()")
    out = []
    for item in items:
        if not (
            isinstance(item, tuple)
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], torch.Tensor)
        ):
            raise TypeError(f"weights must be (name, torch.Tensor) pairs, got {type(item).__name__} {item!r:.80}")
        out.append((item[0], item[1].detach().to("cpu").contiguous()))
    return out


def check_against_checkpoint(model_config: Any, items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Names and shapes checked against the engine's local checkpoint before anything is sent: vLLM's reload
    leaves the model unusable (parameters on the meta device) when a tensor does not fit. A tied model's
    ``lm_head.weight`` (which a transformers ``state_dict`` lists beside the input embedding) is dropped. A model
    given by hub name (no local folder) is not checked."""
    from pathlib import Path

    from safetensors import safe_open

    folder = Path(str(getattr(model_config, "model", "")))
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        logger.debug("no local safetensors checkpoint at %s: weight names and shapes are not checked", folder)
        return items
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        with safe_open(str(file), "pt") as handle:
            for key in handle.keys():
                shapes[key] = tuple(handle.get_slice(key).get_shape())
    tied = _tied(model_config)
    kept = []
    for name, tensor in items:
        if name not in shapes:
            if tied and name == "lm_head.weight":
                continue
            raise ValueError(
                f"{name!r} is not a weight of the engine's checkpoint ({folder}): pass the checkpoint's "
                "parameter names (a transformers state_dict of the same architecture)"
            )
        if tuple(tensor.shape) != shapes[name]:
            raise ValueError(f"{name!r} has shape {tuple(tensor.shape)}, the engine's checkpoint has {shapes[name]}")
        kept.append((name, tensor))
    return kept


def _load_in_worker(worker: Any, items: list[tuple[str, Any]]) -> None:
    """Runs in vLLM's worker: ``reload_weights`` (which also re-runs the processing some backends do after loading,
    e.g. the CPU build's packed GEMM copies), then that processing for a tied output embedding, which the reload
    skips (its checkpoint name is not loaded) and so would keep computing logits from the old weights."""
    worker.reload_weights(weights_iterator=items)
    if _tied(worker.vllm_config.model_config):
        head = getattr(worker.get_model(), "lm_head", None)
        method = getattr(head, "quant_method", None)
        if method is None:
            raise RuntimeError(
                f"{type(worker.get_model()).__name__} ties its embeddings but has no lm_head with a "
                "quant_method to refresh after the reload"
            )
        method.process_weights_after_loading(head)


def _tied(model_config: Any) -> bool:
    return bool(getattr(getattr(model_config, "hf_config", None), "tie_word_embeddings", False))


def _can_send_functions() -> bool:
    return os.environ.get(INSECURE_SERIALIZATION_ENV, "0").lower() in ("1", "true")


def _refuse_tied(model_config: Any) -> None:
    if _tied(model_config):
        raise EngineError(
            "this model ties its output embedding to its input embedding, and vLLM's reload_weights (the only "
            "path into an engine core in another process without pickling) leaves the output copy stale: set "
            f"{INSECURE_SERIALIZATION_ENV}=1 before building the engine (the agent then sends the loading function), "
            "or run the offline LLM in-process with VLLM_ENABLE_V1_MULTIPROCESSING=0"
        )


def load_weights(llm: Any, named_tensors: Iterable[tuple[str, Any]] | dict) -> None:
    """Load weights into a ``vllm.LLM`` (its prefix cache is left alone: see the module docstring)."""
    core = llm.llm_engine
    items = check_against_checkpoint(core.model_config, named_tensor_list(named_tensors))
    in_process = type(getattr(core, "engine_core", None)).__name__ == "InprocClient"
    try:
        if in_process or _can_send_functions():
            llm.collective_rpc(functools.partial(_load_in_worker, items=items))
            return
        _refuse_tied(core.model_config)
        folder = _write(items)
        try:
            llm.collective_rpc("reload_weights", kwargs={"weights_path": folder})
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    except EngineError:
        raise
    except Exception as exc:
        raise _error(exc) from exc


async def aload_weights(engine: Any, named_tensors: Iterable[tuple[str, Any]] | dict) -> None:
    """Load weights into a ``vllm.v1.engine.async_llm.AsyncLLM`` (whose engine core runs in another process)."""
    import asyncio

    items = check_against_checkpoint(engine.model_config, named_tensor_list(named_tensors))
    try:
        if _can_send_functions():
            await engine.collective_rpc(functools.partial(_load_in_worker, items=items))
            return
        _refuse_tied(engine.model_config)
        folder = await asyncio.get_running_loop().run_in_executor(None, _write, items)
        try:
            await engine.collective_rpc("reload_weights", kwargs={"weights_path": folder})
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    except EngineError:
        raise
    except Exception as exc:
        raise _error(exc) from exc


def _write(items: list[tuple[str, Any]]) -> str:
    from safetensors.torch import save_file

    folder = tempfile.mkdtemp(prefix="harmony-agent-weights-")
    save_file(dict(items), f"{folder}/model.safetensors")
    return folder


def _error(exc: Exception) -> EngineError:
    return EngineError(
        f"vLLM could not load the new weights ({type(exc).__name__}: {exc}); the engine's weights may "
        "be unusable now: load a complete state dict of the same architecture again, or restart it"
    )
