"""Benchmark of the agent loop on the real vLLM engine (CPU build here; the same script runs on a GPU).

Prints its figures and ends with one JSON line:
``{"loop_vs_raw": .., "continuous_vs_barrier": .., "loop_cpu_ms_per_turn": {"turn100": .., "turn5000": ..},
"cache_reuse": {"llama": .., "gpt_oss": ..}, ..}``

- loop_vs_raw: generated tokens/s of ``Agent`` over raw ``LLM.generate`` on the same engine, model and number of
  generated tokens, with a python call every ``--call-every`` tokens (target >= 0.95).
- continuous_vs_barrier: wall time of a round-barrier loop (generate all, run all tools, repeat) over the
  continuous scheduler, a call after 50-350 generated tokens, tool latency random in 0-2 s (target >= 1.5),
  on the vLLM engine; ``continuous_vs_barrier_decode_bound`` is the same comparison on a stand-in engine whose
  step costs the same at any batch size, as a GPU's decode does (the CPU engine here is compute-bound).
- cache_reuse: prompt tokens vLLM reused from its prefix cache over prompt tokens re-submitted after tool calls,
  measured per request (``RequestOutput.num_cached_tokens``) on the loop_vs_raw workload, for the random Llama
  and for a random model of gpt-oss's architecture (sliding-window/full attention with sinks, experts: vLLM's
  hybrid KV-cache manager). Printed beside it: the share that whole-block reuse allows (every full block of
  what the previous request computed) at this build's block size and at 16-token blocks (GPUs), and the tokens
  each tool turn recomputes.
- append_vs_rerender: per-turn CPU cost of re-rendering a 100-turn, ~100k-token conversation over appending
  the new tokens as the loop does (target >= 20).
- async_vs_sync: wall time of the synchronous ``Agent`` (offline ``LLM``) over ``AsyncAgent`` (``AsyncLLM``, one
  coroutine per trajectory) on the same work: ``--async-trajectories`` scripted problems with python calls on the
  tiny test model, greedy, so both produce the same tokens (checked); both engines are vLLM with the same
  arguments (target >= 0.95). Run alone with ``--async-vs-sync-only``.
- loop_cpu_ms_per_turn: the loop's own CPU time per turn (completion handled, call run in a trivial session,
  reply appended, request re-submitted) at turn 100 and at turn 5,000 of one trajectory on an instant stand-in
  engine; the work per turn must not grow with the trajectory (``loop_cpu_turn5000_vs_turn100`` about 1).

The model is a random-weight Llama with gpt-oss's 201088-token vocabulary. A logits processor makes every
request open a python call header, sample freely, and close the call after ``BENCH_CALL_EVERY`` (200) tokens,
so the loop parses real calls and runs them (the sampled "code" is junk, so each call is a real SyntaxError
round trip through the tool runtime). The raw baseline's requests go through the same processor but have no
stop tokens, so they pay the same per-token cost and never stop.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import random
import statistics
import sys
import threading
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 1) - 1}")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
_shared_vocab = ROOT.parent / "shared" / "vocab"
if "TIKTOKEN_ENCODINGS_BASE" not in os.environ and _shared_vocab.is_dir():
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(_shared_vocab)

import torch  # noqa: E402
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor  # noqa: E402

from harmony_agent import Agent, Task, VLLMEngine  # noqa: E402
from harmony_agent import tool_messages as tm  # noqa: E402
from harmony_agent.encoding import CALL, get_encoding, harmony  # noqa: E402
from harmony_agent.engine import Completion, Request, Sampling  # noqa: E402
from harmony_agent.parsing import find_tool_call, parse_completion  # noqa: E402
from harmony_agent.prompt import PromptConfig, prompt_messages, render_prompt  # noqa: E402
from harmony_agent.trajectory import Trajectory  # noqa: E402

CALL_HEADER = [200005, 35644, 316, 28, 29010, 3490, 200008]  # <|channel|>analysis to=python code<|message|>
CALL_EVERY = int(os.environ.get("BENCH_CALL_EVERY", "200"))
FIRST_SPECIAL = 199998  # ids from here up are special tokens: kept out of the sampled "code"


def segment_length(prompt_ids: Sequence[int]) -> int:
    """Where a request's call comes: 50-350 tokens in, a hash of its whole prompt (the same under both schedulers)."""
    return 50 + zlib.crc32(array.array("l", prompt_ids).tobytes()) % 301


class ForcedCalls(AdapterLogitsProcessor):
    """Every request: a python call header, free tokens, then ``<|call|>``, again and again.

    It runs for the raw baseline's requests too, so both pay the same per-token cost; the raw requests have no
    stop tokens, so for them ``<|call|>`` is just another token and generation goes on.
    """

    #: False: a call every CALL_EVERY tokens. True: a call after :func:`segment_length` tokens (50-350, mean 200).
    random_segments = False

    def is_argmax_invariant(self) -> bool:
        return False

    def new_req_logits_processor(self, params):
        random_segments = ForcedCalls.random_segments

        def force(prompt_ids: list[int], output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            every = segment_length(prompt_ids) if random_segments else CALL_EVERY
            n = len(output_ids) % every
            if n < len(CALL_HEADER) or n >= every - 1:
                token = CALL_HEADER[n] if n < len(CALL_HEADER) else CALL
                forced = torch.full_like(logits, float("-inf"))
                forced[token] = 0.0
                return forced
            logits[FIRST_SPECIAL:] = float("-inf")
            return logits

        return force


def bench_model(path: Path, arch: str = "llama") -> Path:
    """A random-weight model with the full vocabulary (cached): a Llama, or gpt-oss's architecture."""
    if (path / "config.json").exists():
        return path
    from transformers import GenerationConfig

    torch.manual_seed(0)
    if arch == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(
            vocab_size=201088,
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=4,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=64,
            max_position_embeddings=8192,
            tie_word_embeddings=True,
            eos_token_id=200002,
            bos_token_id=199998,
        )
        model = LlamaForCausalLM(config)
    else:  # the real models' layer pattern (sliding window 128 / full), sinks, experts, YaRN (run with 8192 context)
        from transformers import GptOssConfig, GptOssForCausalLM

        config = GptOssConfig(
            vocab_size=201088,
            hidden_size=128,
            intermediate_size=128,
            num_hidden_layers=4,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=64,
            num_local_experts=4,
            num_experts_per_tok=2,
            sliding_window=128,
            max_position_embeddings=131072,
            eos_token_id=200002,
            bos_token_id=199998,
        )
        model = GptOssForCausalLM(config)
    tmp = path.with_name(path.name + ".tmp")
    model.to(torch.bfloat16).save_pretrained(tmp)
    GenerationConfig(eos_token_id=200002, bos_token_id=199998).save_pretrained(tmp)
    tmp.rename(path)
    return path


class ReuseMeter:
    """An Engine wrapper noting, for each re-submission, its length, what vLLM reused and what it computed before.

    A re-submission is a request whose prompt extends a finished request's prompt and output (the loop only
    appends); ``computed`` is what that request put in the KV cache: its prompt and all but its last output token.
    """

    def __init__(self, engine):
        self.engine = engine
        self.max_model_len = engine.max_model_len
        self.prompts: dict[str, list[int]] = {}
        self.finished: list[list[int]] = []
        self.resubmissions: list[tuple[int, int, int]] = []  # (prompt tokens, reused, computed by the previous)

    def submit(self, request: Request, sampling: Sampling) -> None:
        self.prompts[request.request_id] = list(request.prompt_ids)  # a read-only view: copied to extend it
        self.engine.submit(request, sampling)

    def step(self) -> list[Completion]:
        done = self.engine.step()
        for completion in done:
            prompt = self.prompts.pop(completion.request_id)
            previous = max((seq for seq in self.finished if prompt[: len(seq)] == seq), key=len, default=None)
            if previous is not None:
                self.finished.remove(previous)
                self.resubmissions.append((len(prompt), completion.cached_tokens, len(previous) - 1))
            self.finished.append(prompt + completion.token_ids)
        return done

    def has_unfinished(self) -> bool:
        return self.engine.has_unfinished()

    def abort(self, request_ids: list[str]) -> None:
        self.engine.abort(request_ids)

    def summary(self, block: int) -> dict:
        submitted = sum(n for n, _, _ in self.resubmissions)
        reused = sum(r for _, r, _ in self.resubmissions)

        def bound(size: int) -> int:
            return sum(min(c // size * size, (n - 1) // size * size) for n, _, c in self.resubmissions)

        turns = max(1, len(self.resubmissions))
        return {
            "resubmissions": len(self.resubmissions),
            "submitted": submitted,
            "reused": reused,
            "cache_reuse": reused / max(1, submitted),
            "bound": bound(block) / max(1, submitted),
            "bound_16": bound(16) / max(1, submitted),
            "recomputed_per_turn": (submitted - reused) / turns,
            "recomputed_per_turn_16": (submitted - bound(16)) / turns,
        }


def measure_reuse(llm, pool, texts: list[str], max_tokens: int, prompt: PromptConfig, name: str) -> float:
    """Run the loop over ``texts`` on ``llm`` (calls forced every CALL_EVERY tokens); print and return the reuse."""
    meter = ReuseMeter(VLLMEngine(llm))
    results, _ = loop_generate(meter, pool, texts, max_tokens, 300, prompt)
    block = int(llm.llm_engine.vllm_config.cache_config.block_size)
    s = meter.summary(block)
    cached = sum(r.prompt_tokens_cached for r in results)
    total = cached + sum(r.prompt_tokens_prefilled for r in results)
    print(
        f"cache reuse, {name}: {s['resubmissions']} re-submissions after tool calls, {s['submitted']} prompt "
        f"tokens, {s['reused']} reused -> {s['cache_reuse']:.3f} (every full {block}-token block: "
        f"{s['bound']:.3f}; with 16-token blocks: {s['bound_16']:.3f}); each tool turn recomputes "
        f"{s['recomputed_per_turn']:.0f} tokens here, {s['recomputed_per_turn_16']:.0f} with 16-token blocks; "
        f"all requests incl. first prompts (Result counts): {cached}/{total}",
        flush=True,
    )
    return s["cache_reuse"]


class LatencyPool:
    """Wraps a session pool: every call first waits a random 0-2 s (seeded per session and call)."""

    def __init__(self, pool, seed: int, low: float = 0.0, high: float = 2.0):
        self.pool, self.seed, self.low, self.high = pool, seed, low, high
        self.opened = 0
        self.lock = threading.Lock()

    def open(self):
        with self.lock:
            index, self.opened = self.opened, self.opened + 1
        session, calls = self.pool.open(), [0]
        real_run = session.run

        def run(code, timeout=None):
            rng = random.Random(self.seed * 1_000_003 + index * 1009 + calls[0])
            calls[0] += 1
            time.sleep(rng.uniform(self.low, self.high))
            return real_run(code, timeout=timeout)

        session.run = run
        return session

    def close(self):
        pass


def problems(n: int) -> list[str]:
    return [f"Benchmark problem {i}: what is {i} * {i + 7}?" for i in range(n)]


def raw_generate(llm, prompts: list[list[int]], max_tokens: int, seed: int) -> tuple[int, float]:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = [
        SamplingParams(
            temperature=1.0, max_tokens=max_tokens, ignore_eos=True, detokenize=False, logprobs=0, seed=seed + i
        )
        for i in range(len(prompts))
    ]
    start = time.perf_counter()
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    seconds = time.perf_counter() - start
    return sum(len(o.outputs[0].token_ids) for o in outs), seconds


def loop_generate(engine, pool, texts: list[str], max_tokens: int, seed: int, prompt: PromptConfig):
    agent = Agent(
        engine=engine,
        session_pool=pool,
        max_tokens=max_tokens,
        max_tool_calls=10_000,
        conversation_start_date=prompt.conversation_start_date,
        temperature=1.0,
    )
    start = time.perf_counter()
    results = [r for _, r in agent.stream(Task(t, seed=seed + i) for i, t in enumerate(texts))]
    seconds = time.perf_counter() - start
    return results, seconds


def barrier_generate(
    engine, pool, texts: list[str], max_tokens: int, seed: int, prompt: PromptConfig
) -> tuple[float, float, int]:
    """The round-barrier baseline on any Engine: generate for all, then run all tools, then the next round.

    Returns (wall seconds, seconds spent generating, rounds).
    """
    sampling = Sampling(temperature=1.0, logprobs=True)
    trajectories = [Trajectory.from_prompt(render_prompt(t, prompt)) for t in texts]
    sessions = [None] * len(texts)
    active = list(range(len(texts)))
    start = time.perf_counter()
    generating = 0.0
    with ThreadPoolExecutor(max_workers=len(texts)) as workers:
        turn = 0
        while active:
            round_start = time.perf_counter()
            owner = {}
            for i in active:
                t = trajectories[i]
                request = Request(
                    f"barrier-{turn}-{i}",
                    list(t.token_ids),
                    min(max_tokens - t.num_model_tokens, engine.max_model_len - len(t)),
                    seed + i + turn * 1_000_003,
                )  # the seeds the continuous scheduler uses
                engine.submit(request, sampling)
                owner[request.request_id] = i
            done = {}
            while engine.has_unfinished():
                for completion in engine.step():
                    done[owner[completion.request_id]] = completion
            generating += time.perf_counter() - round_start
            calls = []
            for i in active:
                ids = done[i].token_ids
                trajectories[i].append_model(ids, done[i].logprobs)
                call = find_tool_call(parse_completion(ids), ids)
                if call is not None and trajectories[i].num_model_tokens < max_tokens:
                    calls.append((i, call))

            def execute(item):
                i, call = item
                if sessions[i] is None:
                    sessions[i] = pool.open()
                return i, call, sessions[i].run(call.text)

            for i, call, result in workers.map(execute, calls):  # the barrier: every tool of the round
                trajectories[i].append_tool(tm.render_reply(tm.tool_message("python", result.output, call.channel)))
            active = [i for i, _ in calls]
            turn += 1
    seconds = time.perf_counter() - start
    for s in sessions:
        if s is not None:
            s.close()
    return seconds, generating, turn


class DecodeBoundEngine:
    """A stand-in for a GPU's decode regime: a step costs ``step_seconds`` however many sequences it holds.

    It writes what :class:`ForcedCalls` makes the real model write (a python call header, filler tokens, then
    ``<|call|>`` after :func:`segment_length` tokens), so the loop runs real calls on it.
    """

    def __init__(self, step_seconds: float = 0.01, max_model_len: int = 8192):
        self.step_seconds = step_seconds
        self.max_model_len = max_model_len
        self.running: dict[str, tuple[Request, list[int], int]] = {}

    def submit(self, request: Request, sampling: Sampling) -> None:
        every = segment_length(request.prompt_ids)
        self.running[request.request_id] = (request, [], every)

    def step(self) -> list[Completion]:
        time.sleep(self.step_seconds)
        finished = []
        for rid, (request, out, every) in list(self.running.items()):
            n = len(out)
            out.append(CALL_HEADER[n] if n < len(CALL_HEADER) else CALL if n == every - 1 else 1000 + n % 97)
            if out[-1] == CALL or len(out) >= request.max_tokens:
                del self.running[rid]
                finished.append(Completion(rid, out, [-1.0] * len(out), "stop" if out[-1] == CALL else "length"))
        return finished

    def has_unfinished(self) -> bool:
        return bool(self.running)

    def abort(self, request_ids: list[str]) -> None:
        for rid in request_ids:
            self.running.pop(rid, None)


def append_vs_rerender(turns: int = 100, total_tokens: int = 100_000) -> dict:
    """Per-turn CPU cost at the last turn of a long conversation: re-render everything vs append new tokens."""
    oh = harmony()
    enc = get_encoding()
    rng = random.Random(0)
    words = ["compute", "the", "sum", "of", "residues", "modulo", "prime", "hence", "we", "get", "x", "=", "42"]
    prompt = PromptConfig(conversation_start_date="2025-01-01")
    messages = prompt_messages("Q", prompt)
    trajectory = Trajectory.from_prompt(render_prompt("Q", prompt))
    per_turn = total_tokens // turns
    completion_ids = []
    for _ in range(turns):
        analysis = " ".join(rng.choice(words) for _ in range(per_turn - 120))
        code = "\n".join(f"x{j} = {rng.randint(0, 10**6)} * {rng.randint(0, 10**6)}" for j in range(8))
        text = (
            f"<|channel|>analysis<|message|>{analysis}<|end|><|start|>assistant"
            f"<|channel|>analysis to=python code<|message|>{code}<|call|>"
        )
        completion_ids = enc.encode(text, allowed_special="all")
        parsed = parse_completion(completion_ids)
        messages.extend(parsed.messages)
        reply = tm.tool_message("python", str(rng.randint(0, 10**12)) + "\n", "analysis")
        messages.append(reply)
        trajectory.append_model(completion_ids, None)
        trajectory.append_tool(tm.render_reply(reply))

    def rerender():
        conversation = oh.Conversation.from_messages(messages)
        return enc.render_conversation_for_completion(conversation, oh.Role.ASSISTANT)

    def append():
        t = Trajectory(
            trajectory.token_ids[:],
            trajectory.loss_mask[:],
            trajectory.logprobs[:],
            trajectory.segments[:],
            trajectory.prompt_len,
        )
        start = time.perf_counter()
        parsed = parse_completion(completion_ids)  # what the loop does with a new completion
        t.append_model(completion_ids, None)
        t.append_tool(tm.render_reply(tm.tool_message("python", "123\n", "analysis")))
        _ = list(t.token_ids)  # the request's prompt copy
        return time.perf_counter() - start, parsed

    rerender_s = statistics.median(_timed(rerender) for _ in range(7))
    append_s = statistics.median(append()[0] for _ in range(7))
    rendered = rerender()
    return {
        "tokens": len(trajectory),
        "rerender_ms": rerender_s * 1e3,
        "append_ms": append_s * 1e3,
        "ratio": rerender_s / append_s,
        "rerender_token_identical": list(rendered) == trajectory.token_ids,
    }


class InstantEngine:
    """A stand-in engine that answers every request at once with the same python call (no copy of the prompt)
    and records the process's CPU time at each submission."""

    COMPLETION = "<|channel|>analysis to=python code<|message|>print(x)<|call|>"

    def __init__(self):
        self.max_model_len = 1 << 40
        self.cpu_at_submit: list[float] = []
        self.running: list[Request] = []
        self.tokens = get_encoding().encode(self.COMPLETION, allowed_special="all")

    def submit(self, request: Request, sampling: Sampling) -> None:
        self.cpu_at_submit.append(time.process_time())
        self.running.append(request)

    def step(self) -> list[Completion]:
        done, self.running = self.running, []
        return [Completion(r.request_id, list(self.tokens), [-0.5] * len(self.tokens), "stop") for r in done]

    def has_unfinished(self) -> bool:
        return bool(self.running)

    def abort(self, request_ids: list[str]) -> None:
        self.running = []


class _TrivialSession:
    def run(self, code, timeout=None):
        from tool_runtime import ExecResult

        return ExecResult("1\n", "ok", False, 0.0)

    def close(self):
        pass


class _TrivialPool:
    def open(self):
        return _TrivialSession()


def loop_cpu_per_turn(turns: int = 5_100, windows: tuple[int, ...] = (100, 5_000), width: int = 100) -> dict:
    """CPU ms per turn of the loop itself around given turns of one long trajectory (instant engine and tool)."""
    engine = InstantEngine()
    agent = Agent(
        engine=engine,
        session_pool=_TrivialPool(),
        max_tool_calls=turns,
        max_tokens=1 << 40,
        conversation_start_date="2025-01-01",
    )
    [(_, result)] = list(agent.stream([Task("Benchmark problem")]))
    marks = engine.cpu_at_submit
    out = {"turns": len(marks) - 1, "tokens": len(result.trajectory)}
    for turn in windows:
        lo, hi = turn - width // 2, turn + width // 2
        out[turn] = (marks[hi] - marks[lo]) / (hi - lo) * 1e3
    return out


def async_vs_sync(trajectories: int = 64, repeats: int = 2) -> dict:
    """Sync Agent over LLM vs AsyncAgent over AsyncLLM: the same scripted trajectories, best wall time of each."""
    import asyncio

    from vllm import LLM

    from harmony_agent.async_agent import AsyncAgent, AsyncVLLMEngine
    from harmony_agent.testing import SCRIPTED_PROBLEMS, build
    from tool_runtime import SessionPool

    path = str(build())
    engine_args = dict(
        enforce_eager=True,
        max_model_len=4096,
        enable_prefix_caching=True,
        kv_cache_memory_bytes=256 << 20,
        seed=0,
        dtype="float32",
    )
    problems = [SCRIPTED_PROBLEMS[i % len(SCRIPTED_PROBLEMS)].problem for i in range(trajectories)]
    settings = dict(temperature=0.0, max_tokens=400, conversation_start_date="2025-01-01")
    sync_s, async_s = [], []
    with SessionPool(max_sessions=trajectories + 4, timeout=10.0) as pool:
        llm = LLM(model=path, skip_tokenizer_init=True, **engine_args)
        agent = Agent(llm=llm, session_pool=pool, **settings)

        async def run_async(aagent):
            return await asyncio.gather(*(aagent.solve(p, seed=i) for i, p in enumerate(problems)))

        async def main_async():
            aengine = AsyncVLLMEngine.from_model(path, **engine_args)
            aagent = AsyncAgent(aengine, session_pool=pool, **settings)
            try:
                await run_async(aagent)  # warm-up
                out = None
                for _ in range(repeats):
                    start = time.perf_counter()
                    out = await run_async(aagent)
                    async_s.append(time.perf_counter() - start)
                return out
            finally:
                aagent.close()
                aengine.shutdown()

        agent.run(problems[:4], seed=0)  # warm-up
        sync_results = None
        for _ in range(repeats):
            start = time.perf_counter()
            sync_results = [r for row in agent.run(problems, seed=0) for r in row]
            sync_s.append(time.perf_counter() - start)
        del llm
        async_results = asyncio.run(main_async())
    same = [r.trajectory.token_ids for r in sync_results or []] == [r.trajectory.token_ids for r in async_results]
    return {
        "trajectories": trajectories,
        "sync_s": sync_s,
        "async_s": async_s,
        "same_tokens": same,
        "ratio": min(sync_s) / min(async_s),
    }


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trajectories", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=1000, help="generated tokens per trajectory")
    parser.add_argument(
        "--barrier-trajectories",
        type=int,
        default=4,
        help="trajectories of the barrier comparison; few, so that generating a 200-token segment "
        "takes seconds as on a GPU rather than the CPU's tens of seconds at 16",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=Path(os.environ.get("HARMONY_AGENT_BENCH_CACHE", Path.home() / ".cache" / "harmony-agent"))
        / "bench-model",
    )
    parser.add_argument(
        "--decode-bound-only",
        action="store_true",
        help="only the append and decode-bound comparisons (no vLLM engine; seconds)",
    )
    parser.add_argument(
        "--per-turn-only",
        action="store_true",
        help="only the append comparison and the loop's CPU per turn (no engine, no sessions)",
    )
    parser.add_argument(
        "--reuse-only", action="store_true", help="only cache_reuse, on both architectures (8 trajectories each)"
    )
    parser.add_argument("--async-trajectories", type=int, default=64)
    parser.add_argument(
        "--async-vs-sync-only",
        action="store_true",
        help="only the sync Agent vs AsyncAgent comparison (tiny model, both vLLM engines)",
    )
    args = parser.parse_args()

    if args.async_vs_sync_only:
        avs = async_vs_sync(args.async_trajectories)
        print(
            f"async vs sync: {avs['trajectories']} scripted trajectories with python calls, greedy: sync Agent "
            f"{[round(x, 2) for x in avs['sync_s']]} s, AsyncAgent {[round(x, 2) for x in avs['async_s']]} s -> "
            f"{avs['ratio']:.2f} (same tokens: {avs['same_tokens']})"
        )
        print(json.dumps({"async_vs_sync": round(avs["ratio"], 2)}))
        return

    print("append vs re-render (no engine) ...", flush=True)
    avr = append_vs_rerender()
    print(
        f"  {avr['tokens']} tokens, 100 turns: re-render {avr['rerender_ms']:.2f} ms/turn, append "
        f"{avr['append_ms']:.3f} ms/turn -> {avr['ratio']:.1f}x; re-render token-identical to the model's "
        f"tokens: {avr['rerender_token_identical']}"
    )

    print("loop CPU per turn (instant stand-in engine and tool) ...", flush=True)
    per_turn = loop_cpu_per_turn()
    print(
        f"  one trajectory, {per_turn['turns']} calls, {per_turn['tokens']} tokens: {per_turn[100]:.3f} ms/turn "
        f"at turn 100, {per_turn[5000]:.3f} ms/turn at turn 5,000 -> {per_turn[5000] / per_turn[100]:.2f}x"
    )
    figures = {
        "loop_cpu_ms_per_turn": {"turn100": round(per_turn[100], 3), "turn5000": round(per_turn[5000], 3)},
        "loop_cpu_turn5000_vs_turn100": round(per_turn[5000] / per_turn[100], 2),
        "append_vs_rerender": round(avr["ratio"], 1),
    }
    if args.per_turn_only:
        print(json.dumps(figures))
        return

    from tool_runtime import SessionPool

    prompt = PromptConfig(conversation_start_date="2025-01-01")
    with SessionPool(max_sessions=max(args.trajectories, args.barrier_trajectories) + 4, timeout=10.0) as pool:
        texts_d = problems(args.trajectories)
        decode_bound = DecodeBoundEngine(step_seconds=0.01)
        barrier_d, _, rounds_d = barrier_generate(
            decode_bound, LatencyPool(pool, seed=2), texts_d, args.tokens, 7, prompt
        )
        _, continuous_d = loop_generate(decode_bound, LatencyPool(pool, seed=2), texts_d, args.tokens, 7, prompt)
        print(
            f"continuous vs barrier, decode-bound stand-in engine (10 ms a step at any batch size, as a GPU): "
            f"{args.trajectories} trajectories, a call after 50-350 tokens, tool latency U(0, 2) s: barrier "
            f"{barrier_d:.1f} s ({rounds_d} rounds), continuous {continuous_d:.1f} s -> "
            f"{barrier_d / continuous_d:.2f}x",
            flush=True,
        )
        figures["continuous_vs_barrier_decode_bound"] = round(barrier_d / continuous_d, 2)
        if args.decode_bound_only:
            print(json.dumps(figures))
            return

        args.model_dir.parent.mkdir(parents=True, exist_ok=True)
        from vllm import LLM

        def load(arch: str):
            model = bench_model(
                args.model_dir if arch == "llama" else args.model_dir.with_name(args.model_dir.name + "-gpt-oss"), arch
            )
            return LLM(
                model=str(model),
                skip_tokenizer_init=True,
                enforce_eager=True,
                max_model_len=8192,
                enable_prefix_caching=True,
                kv_cache_memory_bytes=1 << 30,
                logits_processors=[ForcedCalls],
                dtype="float32",  # bf16 matmuls fall back to a slow path on CPUs without bf16 instructions
                seed=0,
                # vLLM 0.32 rewinds a seeded request's generator when its prefill was split across steps, which
                # CPU generators cannot do ("CPU Generator does not use offset"): whole prefills only
                enable_chunked_prefill=False,
                max_num_batched_tokens=8192,
            )

        # gpt-oss first: the first engine of a process sets up vLLM's parallel groups, and a mixture-of-experts
        # model started after a Llama fails ("expert parallel group is not initialized")
        reuse = {}
        texts = problems(8 if args.reuse_only else args.trajectories)
        llm = load("gpt_oss")
        reuse["gpt_oss"] = round(measure_reuse(llm, pool, texts, args.tokens, prompt, "gpt_oss"), 3)
        del llm
        if args.reuse_only:
            llm = load("llama")
            reuse["llama"] = round(measure_reuse(llm, pool, texts, args.tokens, prompt, "llama"), 3)
            print(json.dumps({"cache_reuse": {"llama": reuse["llama"], "gpt_oss": reuse["gpt_oss"]}}))
            return

        llm = load("llama")
        engine = VLLMEngine(llm)
        texts = problems(args.trajectories)
        prompts = [render_prompt(t, prompt) for t in texts]

        raw_generate(llm, prompts[:4], 64, seed=0)  # warm-up
        loop_generate(engine, pool, texts[:4], 2 * CALL_EVERY, 0, prompt)
        raw_rates, loop_rates, calls = [], [], 0
        for rep in range(2):
            tokens, seconds = raw_generate(llm, prompts, args.tokens, seed=100 * rep)
            raw_rates.append(tokens / seconds)
            results, seconds = loop_generate(engine, pool, texts, args.tokens, 100 * rep, prompt)
            loop_rates.append(sum(r.num_model_tokens for r in results) / seconds)
            calls = sum(len(r.tool_calls) for r in results)
        raw_rate, loop_rate = max(raw_rates), max(loop_rates)
        print(
            f"loop vs raw: {args.trajectories} trajectories x {args.tokens} tokens, a call every {CALL_EVERY} "
            f"tokens ({calls} calls): raw {raw_rate:.0f} tok/s, loop {loop_rate:.0f} tok/s "
            f"-> {loop_rate / raw_rate:.3f} (best of 2 each; all: raw {[round(r) for r in raw_rates]}, "
            f"loop {[round(r) for r in loop_rates]})"
        )

        texts_b = problems(args.barrier_trajectories)
        ForcedCalls.random_segments = True  # irregular calls, as a model makes them
        barrier_s, generating_s, rounds = barrier_generate(
            engine, LatencyPool(pool, seed=1), texts_b, args.tokens, 7, prompt
        )
        _, continuous_s = loop_generate(engine, LatencyPool(pool, seed=1), texts_b, args.tokens, 7, prompt)
        print(
            f"continuous vs barrier, vLLM CPU engine: {args.barrier_trajectories} trajectories, a call after "
            f"50-350 tokens, tool latency U(0, 2) s: "
            f"barrier {barrier_s:.1f} s ({rounds} rounds, {generating_s / rounds:.1f} s of generation each), "
            f"continuous {continuous_s:.1f} s -> {barrier_s / continuous_s:.2f}x"
        )

        ForcedCalls.random_segments = False
        reuse["llama"] = round(measure_reuse(llm, pool, texts, args.tokens, prompt, "llama"), 3)

    avs = async_vs_sync(args.async_trajectories)
    print(
        f"async vs sync: {avs['trajectories']} scripted trajectories, sync {min(avs['sync_s']):.2f} s, async "
        f"{min(avs['async_s']):.2f} s -> {avs['ratio']:.2f} (same tokens: {avs['same_tokens']})"
    )
    figures["async_vs_sync"] = round(avs["ratio"], 2)
    print(
        json.dumps(
            {
                "loop_vs_raw": round(loop_rate / raw_rate, 3),
                "continuous_vs_barrier": round(barrier_s / continuous_s, 2),
                **figures,
                "cache_reuse": {"llama": reuse["llama"], "gpt_oss": reuse["gpt_oss"]},
            }
        )
    )


if __name__ == "__main__":
    main()
