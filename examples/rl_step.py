"""One on-policy RL step with harmony_agent, end to end on a CPU (the tiny scripted model; minutes on 2 cores).

1. Generate ``n`` trajectories per problem with python tool calls (vLLM, ``logprobs_mode="processed_logprobs"``:
   each sampled token's logprob under the distribution it was sampled from, i.e. after temperature).
2. Score them: 1 if the boxed answer is right, else 0.
3. Load the same weights in transformers and recompute the logprob of every sampled token from ``to_rl()``;
   print the largest difference to vLLM's (float32: below 1e-3; the tool tokens, mask 0, are not trained on).
4. One policy-gradient step in plain PyTorch on the sampled tokens (REINFORCE with a per-problem mean baseline,
   the group-relative advantage of GRPO without the std normalization).
5. Push the new weights into vLLM (``agent.update_weights``: load + prefix-cache reset), generate again with the
   same seeds (so the two batches differ only by the policy), check the new logprobs against the updated
   transformers model, print the reward before and after.

    python examples/rl_step.py [--n 8] [--temperature 0.6] [--lr 0.01] [--model PATH]

The last line printed is a JSON summary. See docs/rl.md for a walk through it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process: weights load directly
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
_vocab = ROOT.parent / "shared" / "vocab"
if "TIKTOKEN_ENCODINGS_BASE" not in os.environ and _vocab.is_dir():
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(_vocab)

import torch  # noqa: E402

from harmony_agent import Agent, Result  # noqa: E402
from harmony_agent.testing import SCRIPTED_PROBLEMS, build  # noqa: E402

LOGPROBS_MODE = "processed_logprobs"


def rollout_batch(results: list[list[Result]]) -> list[dict]:
    """One dict per trajectory: ``to_rl()`` plus the reward and the problem index (for the group baseline)."""
    batch = []
    for i, (entry, row) in enumerate(zip(SCRIPTED_PROBLEMS, results)):
        for r in row:
            item = r.trajectory.to_rl()
            item.update(
                problem=i, reward=float(r.answer == entry.answer), tool_calls=len(r.tool_calls), finish=r.finish_reason
            )
            batch.append(item)
    return batch


def response_logprobs(model, item: dict, temperature: float) -> torch.Tensor:
    """log pi(token) of every response token under ``model`` at ``temperature`` (what vLLM's processed mode returns;
    top_p=1 and top_k off here), with gradients."""
    ids = torch.tensor([item["prompt_ids"] + item["response_ids"]])
    logits = model(ids).logits[0, :-1].float() / temperature
    start = len(item["prompt_ids"]) - 1
    logp = torch.log_softmax(logits[start:], -1)
    return logp.gather(1, ids[0, start + 1 :, None])[:, 0]


def max_logprob_diff(model, batch: list[dict], temperature: float) -> float:
    """Largest |transformers - vLLM| over the sampled tokens (mask 1) of the batch."""
    worst = 0.0
    with torch.no_grad():
        for item in batch:
            ours = response_logprobs(model, item, temperature)
            mask = torch.tensor(item["response_mask"], dtype=torch.bool)
            theirs = torch.tensor(item["response_logprobs"])
            worst = max(worst, (ours - theirs)[mask].abs().max().item())
    return worst


def policy_gradient_step(model, batch: list[dict], temperature: float, lr: float) -> float:
    """One REINFORCE step: loss = -mean over sampled tokens of advantage * log pi(token). Returns the loss."""
    rewards = torch.tensor([item["reward"] for item in batch])
    groups = torch.tensor([item["problem"] for item in batch])
    baseline = torch.stack([rewards[groups == g].mean() for g in groups.tolist()])
    advantages = rewards - baseline
    tokens = sum(sum(item["response_mask"]) for item in batch)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    optimizer.zero_grad()
    total = 0.0
    for item, advantage in zip(batch, advantages.tolist()):
        if advantage == 0.0:
            continue
        mask = torch.tensor(item["response_mask"], dtype=torch.float32)
        loss = -(advantage * response_logprobs(model, item, temperature) * mask).sum() / tokens
        loss.backward()  # one trajectory at a time: memory stays at one sequence's activations
        total += loss.item()
    optimizer.step()
    return total


def mean_reward(batch: list[dict]) -> float:
    return sum(item["reward"] for item in batch) / len(batch)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8, help="trajectories per problem")
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate of the one step")
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--model", type=Path, default=None, help="default: the tiny scripted model (built if needed)")
    args = parser.parse_args(argv)

    from transformers import AutoModelForCausalLM
    from vllm import LLM

    torch.manual_seed(0)
    path = args.model or build()
    llm = LLM(
        model=str(path),
        skip_tokenizer_init=True,
        enforce_eager=True,
        max_model_len=4096,
        seed=0,
        enable_prefix_caching=True,
        kv_cache_memory_bytes=256 << 20,
        dtype="float32",
        logprobs_mode=LOGPROBS_MODE,
    )
    agent = Agent(
        llm=llm,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        max_tool_calls=3,
        logprobs_mode=LOGPROBS_MODE,
        conversation_start_date="2025-06-01",
    )
    policy = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
    problems = [entry.problem for entry in SCRIPTED_PROBLEMS]
    summary: dict = {}
    try:
        start = time.monotonic()
        before = rollout_batch(agent.run(problems, n=args.n, seed=0))
        summary["trajectories"] = len(before)
        summary["tool_calls"] = sum(item["tool_calls"] for item in before)
        summary["sampled_tokens"] = sum(sum(item["response_mask"]) for item in before)
        summary["reward_before"] = mean_reward(before)
        print(
            f"generated {len(before)} trajectories ({summary['tool_calls']} python calls, "
            f"{summary['sampled_tokens']} sampled tokens) in {time.monotonic() - start:.1f} s; "
            f"reward {summary['reward_before']:.3f}",
            flush=True,
        )

        policy.eval()
        summary["max_abs_logprob_diff"] = max_logprob_diff(policy, before, args.temperature)
        print(
            f"transformers vs vLLM sampled logprobs (float32, {LOGPROBS_MODE}): max abs diff "
            f"{summary['max_abs_logprob_diff']:.2e}",
            flush=True,
        )

        policy.train()
        summary["loss"] = policy_gradient_step(policy, before, args.temperature, args.lr)
        policy.eval()
        summary["old_vs_new_policy"] = max_logprob_diff(policy, before, args.temperature)
        print(
            f"one policy-gradient step (SGD lr {args.lr}): loss {summary['loss']:.4f}; the sampled tokens' "
            f"logprobs moved by up to {summary['old_vs_new_policy']:.3f}",
            flush=True,
        )

        agent.update_weights(dict(policy.named_parameters()))  # load into vLLM + reset its prefix cache
        after = rollout_batch(agent.run(problems, n=args.n, seed=0))  # the same seeds: a paired comparison
        summary["reward_after"] = mean_reward(after)
        summary["max_abs_logprob_diff_after_update"] = max_logprob_diff(policy, after, args.temperature)
        print(
            f"after the update: transformers vs vLLM max abs diff "
            f"{summary['max_abs_logprob_diff_after_update']:.2e} (vLLM samples from the new weights)"
        )
        print(f"reward before {summary['reward_before']:.3f} -> after {summary['reward_after']:.3f}")
    finally:
        agent.close()
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
