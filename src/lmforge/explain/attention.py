"""Attention maps: every layer's and head's attention weights for a text.

Fused attention kernels (sdpa, flash) never materialise the weights, so the model
runs once with transformers' eager attention and is switched back afterwards.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch

from lmforge.errors import LmforgeError
from lmforge.explain.anatomy import encode, token_strings
from lmforge.models.info import model_device


@dataclass
class AttentionMaps:
    tokens: list[str]
    weights: torch.Tensor  # [layers, heads, query, key]; each query row sums to 1

    def head_mean(self) -> torch.Tensor:
        return self.weights.mean(1)

    def to_dict(self, digits: int = 4) -> dict:
        return {
            "tokens": self.tokens,
            "shape": {"layers": self.weights.shape[0], "heads": self.weights.shape[1], "tokens": self.weights.shape[2]},
            "weights": torch.round(self.weights, decimals=digits).tolist(),
        }


@contextlib.contextmanager
def eager_attention(model) -> Iterator[None]:
    previous = getattr(model.config, "_attn_implementation", None)
    if not hasattr(model, "set_attn_implementation"):
        raise LmforgeError(f"{type(model).__name__} cannot switch to eager attention; attention maps need a transformers model")
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if previous and previous != "eager":
            model.set_attn_implementation(previous)


def attention_maps(model, tokenizer, text: str) -> AttentionMaps:
    ids = encode(tokenizer, text)
    with eager_attention(model), torch.no_grad():
        out = model(input_ids=torch.tensor([ids], device=model_device(model)), output_attentions=True)
    if not out.attentions or out.attentions[0] is None:
        raise LmforgeError(f"{type(model).__name__} returned no attention weights; it may not support output_attentions")
    weights = torch.stack([layer[0].float().cpu() for layer in out.attentions])
    return AttentionMaps(token_strings(tokenizer, ids), weights)
