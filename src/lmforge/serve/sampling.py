"""Choosing one sequence's next token from its logits: bias, penalties, grammar mask, then greedy or sampled.

Reported log-probabilities are those of the model's own distribution (log-softmax of the raw
logits), before bias, penalties, grammar or temperature change it, as vLLM and llama.cpp report them
by default: they say what the model thinks, not what the sampler was told to do.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    logprobs: int | None = None  # alternatives reported per token (0 = the chosen token only); None = none
    prompt_logprobs: bool = False  # echo: log-probabilities of the prompt's own tokens too

    def generator(self, offset: int = 0) -> torch.Generator | None:
        """A generator of its own per choice, so a seeded request samples the same alone or in a batch."""
        if self.seed is None:
            return None
        return torch.Generator().manual_seed((self.seed + offset) % 2**64)


@dataclass
class TokenChoice:
    token: int
    logprob: float | None = None
    top: list[tuple[int, float]] = field(default_factory=list)


def top_alternatives(logprobs: torch.Tensor, k: int) -> list[tuple[int, float]]:
    if k <= 0:
        return []
    values, ids = logprobs.topk(k)
    return list(zip(ids.tolist(), values.tolist()))


def prompt_logprobs(logits: torch.Tensor, prompt_ids: list[int], k: int) -> list[TokenChoice]:
    """Log-probability of each prompt token given the ones before it (none for the first, as OpenAI sends)."""
    logprobs = torch.log_softmax(logits[:-1].float(), dim=-1)
    out = [TokenChoice(prompt_ids[0])]
    for row, token in enumerate(prompt_ids[1:]):
        out.append(TokenChoice(token, float(logprobs[row, token]), top_alternatives(logprobs[row], k)))
    return out


def choose_token(logits: torch.Tensor, params: SamplingParams, seen: Counter, generator: torch.Generator | None,
                 allowed: torch.Tensor | None = None) -> TokenChoice:
    """The next token for one sequence. ``seen`` counts its generated tokens; ``allowed`` is a grammar's mask."""
    raw = logits.float()
    scores = raw
    if params.logit_bias or (seen and (params.presence_penalty or params.frequency_penalty)) or allowed is not None:
        scores = raw.clone()
    for token, bias in params.logit_bias.items():
        scores[token] += bias
    if seen and (params.presence_penalty or params.frequency_penalty):
        ids = torch.tensor(list(seen.keys()))
        counts = torch.tensor(list(seen.values()), dtype=scores.dtype)
        scores[ids] -= params.frequency_penalty * counts + params.presence_penalty
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    if params.temperature <= 0:
        token = int(scores.argmax())
    else:
        token = _sample(scores / params.temperature, params, generator)
    if params.logprobs is None:
        return TokenChoice(token)
    logprobs = torch.log_softmax(raw, dim=-1)
    return TokenChoice(token, float(logprobs[token]), top_alternatives(logprobs, params.logprobs))


def _sample(scores: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    if params.top_k is not None and params.top_k < scores.numel():
        kth = scores.topk(params.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < params.top_p  # smallest set whose mass reaches top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, 1, generator=generator))
