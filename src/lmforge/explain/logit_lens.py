"""Logit lens (nostalgebraist 2020): read every layer's residual stream through the final norm and the LM head.

Forward hooks capture the residual entering the first block and leaving each
block; nothing reads weights directly, so compressed modules work unchanged.
The last row equals the model's own next-token distribution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from lmforge.explain.anatomy import anatomy, encode, encode_target, token_strings
from lmforge.models.info import model_device


@dataclass
class LogitLens:
    tokens: list[str]
    layers: list[str]                       # "embeddings", "layer 0", ... "layer N-1"
    top_tokens: list[list[list[str]]]       # [layer][position][k]
    top_probs: list[list[list[float]]]      # [layer][position][k]
    target: str | None = None
    target_prob: list[float] = field(default_factory=list)   # per layer, at the last position
    target_rank: list[int] = field(default_factory=list)     # per layer, 1 = top token

    def to_dict(self) -> dict:
        return asdict(self)


def residual_stream(model, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """The residual stream before the first block and after every block: a list of [batch, seq, hidden]."""
    parts = anatomy(model)
    states: list[torch.Tensor] = []

    def before_first(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        states.append(hidden.detach())

    def after(module, args, output):
        states.append((output[0] if isinstance(output, tuple) else output).detach())

    handles = [parts.layers[0].register_forward_pre_hook(before_first, with_kwargs=True)]
    handles += [layer.register_forward_hook(after) for layer in parts.layers]
    try:
        with torch.no_grad():
            model(input_ids=input_ids)
    finally:
        for handle in handles:
            handle.remove()
    return states


def logit_lens(model, tokenizer, text: str, target: str | None = None, top_k: int = 5) -> LogitLens:
    ids = encode(tokenizer, text)
    parts = anatomy(model)
    states = residual_stream(model, torch.tensor([ids], device=model_device(model)))
    target_id = encode_target(tokenizer, target)[0] if target else None
    top_tokens, top_probs, target_prob, target_rank = [], [], [], []
    with torch.no_grad():
        for state in states:
            probs = torch.softmax(parts.logits_from_residual(state)[0].float(), dim=-1)  # [seq, vocab]
            values, indices = probs.topk(top_k, dim=-1)
            top_probs.append(values.tolist())
            top_tokens.append([token_strings(tokenizer, row) for row in indices.tolist()])
            if target_id is not None:
                last = probs[-1]
                target_prob.append(float(last[target_id]))
                target_rank.append(int((last > last[target_id]).sum()) + 1)
    names = ["embeddings"] + [f"layer {i}" for i in range(len(parts.layers))]
    return LogitLens(token_strings(tokenizer, ids), names, top_tokens, top_probs, target, target_prob, target_rank)
