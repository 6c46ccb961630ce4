"""The CLIs' console: our messages on stderr, vLLM quiet (and on stderr) unless ``--verbose``, Ctrl-C as one line.

stdout carries only the results (tables, listings), so ``harmony-eval ... > table.txt`` keeps them clean.
vLLM configures its own logger when it is imported, from environment variables (``VLLM_LOGGING_LEVEL``,
``VLLM_LOGGING_STREAM``, which defaults to stdout): they are set here before it is imported (a value the user
set wins), and the levels are also applied to an already imported vLLM.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable

from evals.errors import one_line, user_error_types

__all__ = ["setup_console", "run_cli", "QUIET_VLLM_LEVEL"]

QUIET_VLLM_LEVEL = "ERROR"
"""vLLM's log level without --verbose (its INFO and WARNING lines are about the engine, not the results)."""

# vLLM's chat-template warmup needs the tokenizer that the agent deliberately skips (it works on token ids),
# so it always fails and logs a traceback that means nothing here.
_HARMLESS = ("Chat template warmup failed",)


class _StderrHandler(logging.Handler):
    """Writes ``prog: [warning: ]message`` to the *current* sys.stderr (so test capture and redirection work)."""

    def __init__(self, prog: str) -> None:
        super().__init__(logging.INFO)
        self.prog = prog

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
            sys.stderr.write(f"{self.prog}: {level}{record.getMessage()}\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


class _DropHarmless(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in _HARMLESS)


_QUIET_ENV = "HARMONY_EVAL_QUIET"
_NOISE_ENV = {  # what else speaks on stderr while an engine starts, and how to quiet it
    "PYTHONWARNINGS": "ignore",  # torch/vLLM FutureWarnings, the multiprocessing resource tracker
    "TORCH_CPP_LOG_LEVEL": "ERROR",  # torch's C++ warnings (e.g. NUMA binding on CPU)
}


def _quiet_vllm_imports() -> None:
    """vLLM configures its logger only when an engine starts; until then its warnings at import (e.g. "Triton is
    installed, but doesn't include CPU backend") reach stderr unformatted. Raising the level of the ``vllm``
    logger first stops them. Runs at import of this module too, so engine processes that re-import the main
    module (multiprocessing's spawn) are quiet as well."""
    if os.environ.get(_QUIET_ENV) == "1":
        logging.getLogger("vllm").setLevel(os.environ.get("VLLM_LOGGING_LEVEL", QUIET_VLLM_LEVEL).upper())


_quiet_vllm_imports()


def setup_console(prog: str, verbose: bool = False) -> None:
    """Our log lines (``evals`` and ``harmony_agent``) to stderr; vLLM's to stderr, quiet unless `verbose`."""
    handler = _StderrHandler(prog)
    for name in ("evals", "harmony_agent"):
        log = logging.getLogger(name)
        for old in [h for h in log.handlers if isinstance(h, _StderrHandler)]:
            log.removeHandler(old)
        log.addHandler(handler)
        log.setLevel(logging.DEBUG if verbose else logging.INFO)
        log.propagate = False
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    level = os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO" if verbose else QUIET_VLLM_LEVEL).upper()
    if not verbose:
        for key, value in _NOISE_ENV.items():  # for the engine's processes
            os.environ.setdefault(key, value)
        os.environ[_QUIET_ENV] = "1"
        if not sys.warnoptions:  # for this one (PYTHONWARNINGS is read at start), unless -W was given
            warnings.simplefilter("ignore")
    vllm_logger = logging.getLogger("vllm")
    vllm_logger.setLevel(level)
    for h in vllm_logger.handlers:  # an engine started earlier in this process configured them
        h.setLevel(level)
    logging.getLogger("vllm.renderers.base").addFilter(_DropHarmless())


def run_cli(prog: str, body: Callable[[], int], quiet_exit: bool = False) -> int:
    """Run a CLI body: user errors -> one line + exit 2; Ctrl-C -> one line + 130. With `quiet_exit` (the
    console scripts, not tests calling ``main`` in-process) nothing is printed after that line: not by this
    process, nor by vLLM's engine processes, which got the same Ctrl-C (see `evals._stderr_gate`)."""
    gate = None
    if quiet_exit:
        from evals._stderr_gate import StderrGate

        gate = StderrGate()
        gate.open()
    try:
        code = body()
    except user_error_types() as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        if gate is not None:
            gate.close_gate()
        print(f"{prog}: interrupted; finished samples are saved, run the same command to resume", file=sys.stderr)
        if quiet_exit:
            _silence_shutdown()
        return 130
    except SystemExit as e:  # --help
        code = int(e.code or 0) if isinstance(e.code, int) or e.code is None else 2
    if gate is not None:
        gate.flush()
    return code


def _silence_shutdown() -> None:
    """After an interrupt, vLLM's engine shutdown (atexit handlers, its threads) reports the interrupt again with
    tracebacks; our one line has said it all, so this process's stderr goes to /dev/null from here on."""
    try:
        sys.stderr.flush()
        sys.stdout.flush()
        sys.stderr = open(os.devnull, "w")
    except OSError:
        pass
    logging.getLogger("vllm").setLevel(logging.CRITICAL + 1)
