"""Batched text generation for the server: left padding, one KV cache, per-request sampling and limits.

A batch of prompts of different lengths is left-padded so that every row's last
prompt token sits in the same column; each decode step then feeds one token per
row. Rows finish independently (end of sequence, their own ``max_tokens``, or
when the caller's ``on_text`` says stop); the batch ends when all rows have.
Works on any causal LM whose forward takes ``attention_mask``, ``position_ids``
and ``past_key_values`` — transformers models and lmforge-compressed ones alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from lmforge.models.info import model_device


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    # Called with each new piece of decoded text, from the generation thread; returns False to end this row.
    on_text: Callable[[str], bool] = field(default=lambda text: True)


@dataclass
class GenerationOutput:
    completion_tokens: int
    finish_reason: str  # 'stop' (end of sequence or the caller ended it) or 'length'


class GenerateFn(Protocol):
    def __call__(self, requests: list[GenerationRequest]) -> list[GenerationOutput]: ...


class _Detokenizer:
    """Incremental decoding that never emits half a multi-byte character."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
            return ""
        delta, self.text = text[len(self.text):], text
        return delta


def _sample(logits: torch.Tensor, request: GenerationRequest, generator: torch.Generator | None) -> int:
    if request.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / request.temperature, dim=-1)
    if request.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < request.top_p  # smallest set whose mass reaches top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


class ModelGenerator:
    """``GenerateFn`` for a causal LM and its tokenizer."""

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {i for i in [*eos, tokenizer.eos_token_id] if i is not None}
        self.device = model_device(model)

    @torch.inference_mode()
    def __call__(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        n = len(requests)
        width = max(len(r.prompt_ids) for r in requests)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        for row, request in enumerate(requests):
            input_ids[row, width - len(request.prompt_ids):] = torch.tensor(request.prompt_ids)
            attention[row, width - len(request.prompt_ids):] = 1
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        generators = [torch.Generator().manual_seed(r.seed) if r.seed is not None else None for r in requests]
        detokenizers = [_Detokenizer(self.tokenizer) for _ in requests]
        counts = [0] * n
        finish: list[str | None] = [None] * n
        out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True)
        while True:
            logits = out.logits[:, -1, :].float().cpu()
            next_ids = torch.full((n,), self.pad_id, dtype=torch.long)
            for row, request in enumerate(requests):
                if finish[row] is not None:
                    continue
                token = _sample(logits[row], request, generators[row])
                next_ids[row] = token
                if token in self.eos_ids:
                    finish[row] = "stop"
                    continue
                counts[row] += 1
                if not request.on_text(detokenizers[row].add(token)):
                    finish[row] = "stop"
                elif counts[row] >= request.max_tokens:
                    finish[row] = "length"
            if all(f is not None for f in finish):
                break
            attention = torch.cat([attention, torch.ones((n, 1), dtype=torch.long, device=self.device)], dim=1)
            positions = positions[:, -1:] + 1
            out = self.model(input_ids=next_ids[:, None].to(self.device), attention_mask=attention,
                             position_ids=positions, past_key_values=out.past_key_values, use_cache=True)
        return [GenerationOutput(counts[row], finish[row] or "length") for row in range(n)]
