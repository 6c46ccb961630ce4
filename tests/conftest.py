"""Shared pytest setup: offline Harmony vocabulary and local AIME data from ../shared, the tiny model's engine,
and the test tiers (markers set here from what each test uses, so that no test file has to list them)."""

from __future__ import annotations

import ast
import functools
import inspect
import logging
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

#: Fixtures that load the tiny model (train it on first use), a vLLM engine or vLLM itself.
VLLM_FIXTURES = {
    "tiny_llm",
    "tiny_model_path",
    "tiny_gptoss_path",
    "tiny_gptoss_llm",
    "tiny_models",
    "arch_llm",
    "vllm",
}
#: Fixtures and names that start real tool-runtime sessions (isolated with namespaces, cgroups and uids: root).
RUNTIME_FIXTURES = {"pool", "session"}
RUNTIME_NAMES = ("SessionPool", "tool_runtime")


@functools.cache
def _module_imports(path: str) -> frozenset[str]:
    """Top-level package names a test module imports at module level."""
    try:
        tree = ast.parse(Path(path).read_text())
    except (OSError, SyntaxError):
        return frozenset()
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.partition(".")[0])
    return frozenset(names)


def _source(item: pytest.Item) -> str:
    try:
        return inspect.getsource(item.function)  # type: ignore[attr-defined]
    except (AttributeError, OSError, TypeError):
        return ""


@pytest.hookimpl(trylast=True)  # after pytest's own reordering by session-scoped fixture parameters
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``vllm`` (engine or tiny model), ``runtime`` and ``root`` (real tool-runtime sessions) by use; run the
    ``own_engine`` tests last: stopping an in-process vLLM engine tears down vLLM's process-wide parallel groups,
    and the shared engines (``tiny_llm``, ``tiny_gptoss_llm``) fail after that ("... group is not initialized")."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        imports = _module_imports(str(item.path))
        source = _source(item)
        if fixtures & VLLM_FIXTURES or "vllm" in imports or "import vllm" in source or "from vllm" in source:
            item.add_marker(pytest.mark.vllm)
        if (
            fixtures & RUNTIME_FIXTURES
            or item.path.name.startswith("test_tool_runtime")
            or any(name in source for name in RUNTIME_NAMES)
        ):
            item.add_marker(pytest.mark.runtime)
            item.add_marker(pytest.mark.root)
    items[:] = sorted(items, key=lambda item: item.get_closest_marker("own_engine") is not None)  # stable


#: Our loggers (with their descendants) and the root logger's level as they were before any test ran.
_OUR_LOGGERS = ("evals", "harmony_agent", "tool_runtime")
_ROOT_LEVEL = logging.root.level


@pytest.fixture(autouse=True)
def _fresh_logging():
    """Our loggers as a fresh process has them, before every test: a CLI's ``main()`` run in-process (its own
    stderr handler, no propagation, levels) or any test or fixture before this one cannot keep ``caplog`` from
    seeing our records. vLLM's own loggers are left as vLLM configured them."""
    logging.disable(logging.NOTSET)
    logging.root.setLevel(_ROOT_LEVEL)
    for name in [n for n in logging.root.manager.loggerDict if n.split(".")[0] in _OUR_LOGGERS]:
        lg = logging.getLogger(name)
        lg.setLevel(logging.NOTSET)
        lg.propagate = True
        lg.disabled = False
        lg.handlers.clear()
    yield


@pytest.fixture(scope="session")
def tiny_model_path(request: pytest.FixtureRequest) -> Path:
    """The scripted tiny Harmony model, built once and cached (see harmony_agent/testing.py).

    The first build takes from half a minute to several minutes: its progress goes to the terminal, live.
    """
    return _build(request, "llama")


def _build(request: pytest.FixtureRequest, arch: str) -> Path:
    from harmony_agent.testing import build

    reporter = request.config.pluginmanager.get_plugin("terminalreporter")

    def log(message: str) -> None:
        if reporter is not None:
            reporter.write_line(f"[tiny model, {arch}] {message}")

    return build(arch=arch, log=log)


@pytest.fixture(scope="session")
def tiny_gptoss_path(request: pytest.FixtureRequest) -> Path:
    """The same scripts in the gpt-oss architecture (sliding/full attention with sinks, experts, YaRN)."""
    return _build(request, "gpt_oss")


def _tiny_llm(path: Path, **overrides):
    """A real vLLM engine (CPU build) over a tiny model, made by the public ``harmony_agent.testing.load_llm``
    (float32: bf16 matmuls take a slow fallback path on CPUs without bf16 instructions; the Llama replays exactly in
    both, tests/test_tiny_model.py checks bf16 in a child process)."""
    from harmony_agent.testing import load_llm

    llm = load_llm(path, **overrides)
    yield llm
    del llm
    import gc

    gc.collect()


@pytest.fixture(scope="session")
def tiny_models(tiny_model_path, tiny_gptoss_path):
    """Both tiny models, built before any engine starts: vLLM's CPU worker binds the process's OpenMP threads and
    makes ``torch.set_num_threads`` a no-op, and training after that crawled here (over 15 min instead of 1)."""
    return {"llama": tiny_model_path, "gpt_oss": tiny_gptoss_path}


@pytest.fixture(scope="session")
def tiny_gptoss_llm(tiny_models):
    """One real vLLM engine over the tiny gpt-oss model: vLLM's gpt-oss model class and hybrid KV-cache manager.
    Its context length comes from the model (131072), as it would for the real models."""
    yield from _tiny_llm(tiny_models["gpt_oss"], arch="gpt_oss", max_model_len=None)


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
