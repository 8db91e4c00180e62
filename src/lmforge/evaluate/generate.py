"""Batched greedy generation with a KV cache and stop sequences (lm-eval's ``generate_until``).

Prompts are left-padded into a batch with explicit position ids, so every row
sees exactly the positions it would see alone; rows that finish (an EOS token
or a stop string in their decoded text) leave the batch and its cache, so the
rest do not pay for them. The returned text is cut at the first occurrence of
each stop string, as lm-eval cuts it, so results match a batch of one.
Written here rather than with ``model.generate`` because per-row stop strings
and dropping finished rows from the cache are the point of the loop.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from lmforge.models.info import model_device


def eos_token_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(configured) if isinstance(configured, (list, tuple)) else ({configured} if configured is not None else set())
    return ids


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    for stop in stops:
        if stop:
            text = text.split(stop)[0]
    return text


@torch.inference_mode()
def generate_until(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    until: Sequence[str],
    max_gen_toks: int = 256,
    max_length: int = 2048,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy continuation of each prompt, stopped at EOS, at any ``until`` string or after ``max_gen_toks`` tokens."""
    from transformers import DynamicCache

    eos_ids = eos_token_ids(model, tokenizer)
    stops = [*until, *([tokenizer.eos_token] if tokenizer.eos_token else [])]
    context_limit = max_length - max_gen_toks
    if context_limit < 1:
        raise ValueError(f"max_gen_toks {max_gen_toks} leaves no room for a prompt in max_length {max_length}")
    encoded = [tokenizer.encode(p)[-context_limit:] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    outputs: list[str] = [""] * len(prompts)
    device = model_device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, width - len(encoded[i]):] = torch.tensor(encoded[i])
            mask[r, width - len(encoded[i]):] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=model.config)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                       use_cache=True).logits[:, -1]
        live = list(range(len(rows)))  # batch row -> index into `rows`
        generated: list[list[int]] = [[] for _ in rows]
        next_position = positions[:, -1]
        for _ in range(max_gen_toks):
            tokens = logits.argmax(-1)
            keep = []
            for b, r in enumerate(live):
                token = int(tokens[b])
                generated[r].append(token)
                text = tokenizer.decode(generated[r], skip_special_tokens=True)
                if token not in eos_ids and not any(s and s in text for s in until):
                    keep.append(b)
            if not keep or len(generated[live[0]]) >= max_gen_toks:
                break
            if len(keep) < len(live):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                tokens, mask, next_position = tokens[index], mask[index], next_position[index]
                live = [live[b] for b in keep]
            mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)
            next_position = next_position + 1
            logits = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=next_position[:, None],
                           past_key_values=cache, use_cache=True).logits[:, -1]
        for r, i in enumerate(rows):
            outputs[i] = cut_at_stops(tokenizer.decode(generated[r], skip_special_tokens=True), stops)
        if progress:
            progress(len(rows))
    return outputs
