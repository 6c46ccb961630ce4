"""AIME24/AIME25 evaluation and synthetic data generation on top of harmony_agent.

``run_eval`` (notebooks), ``harmony-eval`` (evals.cli) and ``harmony-generate`` (evals.generate, whose
Python API is ``evals.generate.generate`` / ``merge_chunks``); see docs/evals.md.
"""
from evals.errors import EvalError
from evals.grading import extract_answer, is_equivalent, normalize_answer
from evals.metrics import compute_metrics
from evals.runner import AIME_PROMPT, run_eval

__all__ = ["run_eval", "extract_answer", "is_equivalent", "normalize_answer", "compute_metrics", "EvalError",
           "AIME_PROMPT"]
