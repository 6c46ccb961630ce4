"""AIME24/AIME25 evaluation and synthetic data generation on top of harmony_agent.

``run_eval`` (notebooks), ``harmony-eval`` (evals.cli) and ``harmony-generate`` (evals.generate, whose
Python API is ``evals.generate.generate`` / ``merge_chunks``), all configured by one ``EvalConfig``;
see docs/evals.md.
"""

from evals.config import AIME_PROMPT, EvalConfig
from evals.errors import EvalError
from evals.evaluate import run_eval
from evals.grading import extract_answer, is_equivalent, normalize_answer
from evals.metrics import compute_metrics
from evals.summarize import summarize

__all__ = [
    "run_eval",
    "EvalConfig",
    "summarize",
    "extract_answer",
    "is_equivalent",
    "normalize_answer",
    "compute_metrics",
    "EvalError",
    "AIME_PROMPT",
]
