"""Speed and memory: prompt tokens/s, time to first token, decode tokens/s at batch 1 and N, RSS, model bytes.

Greedy decoding with a KV cache, written out step by step so every phase is
timed on its own and any causal LM (compressed ones included) runs through it.
"""

from __future__ import annotations

import resource
import statistics
import time
from typing import Any

import psutil
import torch

from lmforge.models.info import model_device, tensor_bytes


def peak_rss_bytes() -> int:
    """This process's peak resident set size since it started or since ``reset_peak_rss()``."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux, since start


def reset_peak_rss() -> bool:
    """Start a new peak: the next ``peak_rss_bytes()`` covers only what follows (Linux ≥ 4.0; False elsewhere)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        return True
    except OSError:
        return False


def rss_bytes() -> int:
    return psutil.Process().memory_info().rss


@torch.inference_mode()
def greedy_decode(model, prompt: torch.Tensor, new_tokens: int) -> tuple[float, float, float, torch.Tensor]:
    """Greedy-decode ``new_tokens`` after ``prompt``; returns (prefill s, first-token s, decode s, the new tokens)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    start = time.perf_counter()
    out = model(input_ids=prompt, past_key_values=cache, use_cache=True)
    prefill = time.perf_counter() - start
    token = out.logits[:, -1].argmax(-1, keepdim=True)
    first_token = time.perf_counter() - start
    tokens = [token]
    decode_start = time.perf_counter()
    for _ in range(new_tokens - 1):
        out = model(input_ids=token, past_key_values=cache, use_cache=True)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        tokens.append(token)
    decode = time.perf_counter() - decode_start
    return prefill, first_token, decode, torch.cat(tokens, dim=1)


def speed(
    model,
    tokenizer=None,
    *,
    prompt_tokens: int = 64,
    new_tokens: int = 128,
    batch_sizes: tuple[int, ...] = (1, 8),
    repeats: int = 3,
    threads: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Time prefill and greedy decoding on random prompts; median over ``repeats`` after one warm-up.

    Decode tokens/s counts generated tokens across the batch (batch × steps / s).
    """
    if threads:
        torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    device = model_device(model)
    results: dict[str, Any] = {
        "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "threads": torch.get_num_threads(),
        "model_bytes": sum(tensor_bytes(model).values()), "repeats": repeats,
    }
    for batch in batch_sizes:
        prompt = torch.randint(0, vocab, (batch, prompt_tokens), generator=generator).to(device)
        greedy_decode(model, prompt, min(new_tokens, 8))  # warm-up
        runs = [greedy_decode(model, prompt, new_tokens) for _ in range(repeats)]
        prefill = statistics.median(r[0] for r in runs)
        first = statistics.median(r[1] for r in runs)
        decode = statistics.median(r[2] for r in runs)
        results[f"batch{batch}"] = {
            "prompt_tokens_per_s": batch * prompt_tokens / prefill,
            "time_to_first_token_s": first,
            "decode_tokens_per_s": batch * (new_tokens - 1) / decode,
        }
    results["decode_tokens_per_s"] = results[f"batch{batch_sizes[0]}"]["decode_tokens_per_s"]
    results["prompt_tokens_per_s"] = results[f"batch{batch_sizes[0]}"]["prompt_tokens_per_s"]
    results["time_to_first_token_s"] = results[f"batch{batch_sizes[0]}"]["time_to_first_token_s"]
    results["rss_bytes"] = rss_bytes()
    results["peak_rss_bytes"] = peak_rss_bytes()
    return results
