"""Helpers of the RL tests: a trainer-side forward pass (transformers, float32) to check vLLM's logprobs against."""

from __future__ import annotations


def transformers_logprobs(model_path, state, token_ids, start, temperature: float = 1.0):
    """log p(token_i | tokens before it) for i >= start, with the weights ``state`` (a checkpoint state dict) loaded
    into transformers in float32; ``temperature`` divides the logits first (vLLM's processed_logprobs)."""
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(model_path, torch_dtype=torch.float32).eval()
    model.load_state_dict(state, strict=False)
    with torch.no_grad():
        logits = model(torch.tensor([list(token_ids)])).logits[0].float()
    logp = torch.log_softmax(logits / temperature, -1)
    return [logp[i - 1, token_ids[i]].item() for i in range(start, len(token_ids))]


def max_sampled_diff(result, reference, start):
    """Largest |vLLM's sampled logprob - reference| over the trajectory's sampled tokens (loss mask 1)."""
    t = result.trajectory
    return max(abs(reference[i - start] - t.logprobs[i]) for i in range(start, len(t)) if t.loss_mask[i])
