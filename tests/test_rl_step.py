"""examples/rl_step.py runs on the CPU with the tiny model: trajectories with python calls, logprobs that a trainer's
own forward pass reproduces (float32, < 1e-3), one policy-gradient step, the new weights in vLLM, a second batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "rl_step.py"


def test_rl_step_example_runs_and_stays_on_policy(tiny_model_path):
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--n", "4", "--model", str(tiny_model_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["trajectories"] == 12
    assert summary["tool_calls"] > 0 and summary["sampled_tokens"] > 0
    assert summary["max_abs_logprob_diff"] < 1e-3
    assert summary["old_vs_new_policy"] > 1e-3  # the step changed the policy on the sampled tokens ...
    assert summary["max_abs_logprob_diff_after_update"] < 1e-3  # ... and vLLM samples from the changed policy
    assert 0.0 <= summary["reward_before"] <= 1.0 and 0.0 <= summary["reward_after"] <= 1.0
    assert "reward before" in proc.stdout and "max abs diff" in proc.stdout
