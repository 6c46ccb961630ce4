"""Engines: a small protocol the scheduler drives, and its vLLM adapter.

The scheduler submits token prompts and receives finished completions with token ids and logprobs. The vLLM
adapter drives ``LLM.llm_engine`` (``add_request`` / ``step``) so that requests added between steps join the
running batch: a trajectory that comes back from a tool call does not wait for the others.
"""

from __future__ import annotations

import ast
import itertools
import logging
import multiprocessing
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from .config import Sampling
from .encoding import STOP_TOKEN_IDS
from .errors import EngineError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """One generation request: continue ``prompt_ids`` for at most ``max_tokens`` tokens.

    ``prompt_ids`` is a read-only sequence (the loop passes a view of its trajectory, not a copy); an engine
    that keeps it past ``submit`` copies it.
    """

    request_id: str
    prompt_ids: Sequence[int]
    max_tokens: int
    seed: int | None = None


@dataclass
class Completion:
    """A finished request. ``token_ids`` include the stop token when ``finish == "stop"``.

    ``cached_tokens``: how many of the prompt's tokens the engine reused from its prefix cache instead of
    computing them (0 when the engine does not say).
    """

    request_id: str
    token_ids: list[int]
    logprobs: list[float] | None
    finish: Literal["stop", "length", "abort"]
    cached_tokens: int = 0


@runtime_checkable
class Engine(Protocol):
    """What the scheduler needs from an inference engine."""

    max_model_len: int

    def submit(self, request: Request, sampling: Sampling) -> None: ...

    def step(self) -> list[Completion]:
        """Advance decoding by one step; return the requests that finished during it."""
        ...

    def has_unfinished(self) -> bool: ...

    def abort(self, request_ids: list[str]) -> None: ...


def _cpu_platform() -> bool:
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())
    except Exception:  # an unusual vLLM build: treat it as not the CPU one
        logger.debug("cannot tell vLLM's platform", exc_info=True)
        return False


#: vLLM runs its engine in a child process unless this is "0"; the child is started by re-importing the
#: user's ``__main__`` (spawn), which a plain script without a main guard cannot survive.
MULTIPROCESSING_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"


def _script_without_main_guard() -> bool:
    """True when ``__main__`` is a Python script with no top-level ``if __name__ == "__main__":`` block."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if not main_file or not str(main_file).endswith(".py"):  # interactive, ``python -c``, notebooks
        return False
    try:
        tree = ast.parse(Path(main_file).read_text())
    except (OSError, SyntaxError, ValueError):
        return False
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            names = [node.test.left, *node.test.comparators]
            if any(isinstance(n, ast.Name) and n.id == "__name__" for n in names) and any(
                isinstance(n, ast.Constant) and n.value == "__main__" for n in names
            ):
                return False
    return True


def _main_guard_hint() -> str:
    return (
        "vLLM started its engine in a child process, which re-runs your script's top level: put the calls under "
        '`if __name__ == "__main__":`, or set VLLM_ENABLE_V1_MULTIPROCESSING=0 for an in-process engine '
        "(harmony-agent's default on vLLM's CPU build; not for tensor_parallel_size > 1)"
    )


def build_llm(model: str, **engine_kwargs: Any) -> Any:
    """Build a ``vllm.LLM`` for token-in/token-out use (no tokenizer, prefix caching on).

    ``engine_kwargs`` go to ``vllm.LLM`` unchanged (tensor_parallel_size, max_model_len,
    gpu_memory_utilization, enforce_eager, ...). On vLLM's CPU build the KV cache size must be explicit;
    it defaults to 1 GiB there unless ``kv_cache_memory_bytes`` is given, and the engine runs in this process
    (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` unless you set that variable yourself): it starts in ~2 s instead of
    ~15 s and a plain script needs no ``if __name__ == "__main__":`` guard. The in-process engine seeds the
    process's global random generators.
    """
    try:
        import vllm
    except ImportError as exc:
        raise EngineError(
            "vLLM is not installed: `pip install 'harmony-agent[vllm]'` on GPU machines, "
            "`pip install 'harmony-agent[cpu]'` for the CPU build"
        ) from exc
    kwargs = {"skip_tokenizer_init": True, "enable_prefix_caching": True, **engine_kwargs}
    in_process_default = False
    if _cpu_platform():
        kwargs.setdefault("kv_cache_memory_bytes", 1 << 30)
        in_process_default = MULTIPROCESSING_ENV not in os.environ
    if model.startswith(("/", "./", "../", "~")) and not os.path.exists(os.path.expanduser(model)):
        raise EngineError(f"model path {model!r} does not exist: pass a local model folder or a hub model name")
    in_process = in_process_default or os.environ.get(MULTIPROCESSING_ENV, "1") == "0"
    if not in_process and getattr(multiprocessing.current_process(), "_inheriting", False):
        # a spawned process still importing the user's script (multiprocessing's own "bootstrapping phase"
        # check): the script's top level is re-running in vLLM's engine process; say why before vLLM fails
        raise EngineError(f"cannot start a vLLM engine while the script is being re-imported: {_main_guard_hint()}")
    if in_process_default:
        os.environ[MULTIPROCESSING_ENV] = "0"
        logger.info("vLLM CPU build: in-process engine (%s=0)", MULTIPROCESSING_ENV)
    try:
        return vllm.LLM(model=model, **kwargs)
    except Exception as exc:
        if not in_process and _script_without_main_guard():
            raise EngineError(
                f"cannot start the vLLM engine for {model!r} ({type(exc).__name__}: {exc}); {_main_guard_hint()}"
            ) from exc
        raise EngineError(
            f"cannot load model {model!r} with vLLM ({type(exc).__name__}: {exc}); check the name or path, that "
            "its weights are available offline (HF_HUB_OFFLINE=1 with a filled cache, or a local folder), and "
            "the engine arguments"
        ) from exc
    finally:
        if in_process_default:
            os.environ.pop(MULTIPROCESSING_ENV, None)


class VLLMEngine:
    """The :class:`Engine` over a ``vllm.LLM`` (yours or one built by :func:`build_llm`).

    >>> engine = VLLMEngine(llm)                                  # doctest: +SKIP
    >>> engine = VLLMEngine.from_model("openai/gpt-oss-20b", tensor_parallel_size=2)  # doctest: +SKIP
    """

    def __init__(self, llm: Any):
        self.llm = llm
        self._core = llm.llm_engine
        self.max_model_len = int(self._core.model_config.max_model_len)
        self._prefix = f"ha{id(self):x}-"
        self._ids = itertools.count()
        self._mine: set[str] = set()  # ids submitted through this adapter and not finished yet
        self._others: list[Any] = []
        # vLLM >= 0.3x wants prompts processed by its renderer; older versions take a TokensPrompt as it is
        self._render = getattr(getattr(self._core, "renderer", None), "render_cmpl", None)

    @classmethod
    def from_model(cls, model: str, **engine_kwargs: Any) -> VLLMEngine:
        return cls(build_llm(model, **engine_kwargs))

    def new_request_id(self) -> str:
        """A request id unique in this engine (the LLM may be shared with the user's own requests)."""
        return f"{self._prefix}{next(self._ids)}"

    def submit(self, request: Request, sampling: Sampling) -> None:
        from vllm.inputs import TokensPrompt

        params = sampling_params(request, sampling)
        prompt = TokensPrompt(prompt_token_ids=list(request.prompt_ids))
        if self._render is not None:
            (prompt,) = self._render([prompt])
        self._core.add_request(request.request_id, prompt, params)
        self._mine.add(request.request_id)

    def check_sampling(self, sampling: Sampling) -> None:
        """Refuse settings this engine cannot honour (called by the Agent before a run)."""
        check_logprobs_mode(self._core.model_config, sampling)

    def step(self) -> list[Completion]:
        """One engine step: the finished requests submitted through this adapter, as Completions. Outputs of other
        requests (the caller's own, on a shared ``LLM``) are kept for the caller: :meth:`take_other_outputs`."""
        mine = []
        for out in self._core.step():
            if out.request_id not in self._mine:
                self._others.append(out)
            elif out.finished:
                self._mine.discard(out.request_id)
                mine.append(completion_from_output(out))
        return mine

    def take_other_outputs(self) -> list[Any]:
        """The ``RequestOutput``s of requests not submitted by this adapter that came out of the steps it took
        (in order, emptied by the call). A caller sharing the ``LLM`` with a run reads its own outputs here."""
        outputs, self._others = self._others, []
        return outputs

    def has_unfinished(self) -> bool:
        return bool(self._core.has_unfinished_requests())

    def abort(self, request_ids: list[str]) -> None:
        if request_ids:
            self._core.abort_request(list(request_ids))
            self._mine.difference_update(request_ids)

    # -- weights -------------------------------------------------------------------------------------------

    def update_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        """Load new weights (checkpoint names and shapes, as a transformers ``state_dict`` has them; all of them or
        a subset) into the engine, then reset its prefix cache (:meth:`weights_updated`). Call it between runs."""
        from .weights import load_weights

        load_weights(self.llm, named_tensors)
        self.weights_updated()

    def weights_updated(self) -> None:
        """The engine's weights changed: drop every cached KV block, which the old weights computed (a re-submitted
        prefix would otherwise reuse them, and the run would sample from a mix of old and new policy)."""
        if not self.llm.reset_prefix_cache():
            raise EngineError(
                "vLLM could not reset its prefix cache (requests are still running): update weights "
                "between runs, when no request is in the engine"
            )


def sampling_params(request: Request, sampling: Sampling) -> Any:
    """The ``vllm.SamplingParams`` of one request: token in, token out, stop on ``<|return|>``/``<|call|>``, the
    sampled token's logprob when ``sampling.logprobs``; one finished output per request."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
        max_tokens=request.max_tokens,
        seed=request.seed,
        stop_token_ids=list(STOP_TOKEN_IDS),
        # only the loop's stop tokens end an action: vLLM would otherwise also stop on every id of the model's
        # generation_config eos_token_id (gpt-oss lists <|return|>, <|endoftext|> and <|call|>)
        ignore_eos=True,
        detokenize=False,
        skip_special_tokens=False,
        logprobs=0 if sampling.logprobs else None,
        output_kind=RequestOutputKind.FINAL_ONLY,
    )


def check_logprobs_mode(model_config: Any, sampling: Sampling) -> None:
    """vLLM fixes ``logprobs_mode`` per engine (not per request): refuse a run whose ``Sampling`` asks for another."""
    mode = getattr(model_config, "logprobs_mode", "raw_logprobs")
    if sampling.logprobs and mode != sampling.logprobs_mode:
        raise EngineError(
            f"the engine returns {mode} but Sampling(logprobs_mode={sampling.logprobs_mode!r}) was "
            f"asked for: build the engine with logprobs_mode={sampling.logprobs_mode!r} "
            f"(vllm.LLM(..., logprobs_mode=...)), or use Sampling(logprobs_mode={mode!r})"
        )


def completion_from_output(out: Any) -> Completion:
    """A finished vLLM ``RequestOutput`` as a :class:`Completion` (the sampled token's logprob at each position)."""
    choice = out.outputs[0]
    ids = list(choice.token_ids)
    logprobs = None
    if choice.logprobs is not None:
        logprobs = [position[token].logprob for position, token in zip(choice.logprobs, ids)]
    reason = choice.finish_reason
    finish: Literal["stop", "length", "abort"] = (
        "stop" if reason == "stop" else "length" if reason == "length" else "abort"
    )
    return Completion(out.request_id, ids, logprobs, finish, int(getattr(out, "num_cached_tokens", 0) or 0))
