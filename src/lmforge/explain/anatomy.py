"""Find the parts of a causal LM that interpretability methods need, without touching weights.

Attributions go through ``inputs_embeds`` and the logit lens through forward hooks,
so compressed models (packed or sparse modules in place of ``nn.Linear``) work
exactly like plain ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lmforge.errors import LmforgeError

# Where common decoder-only families keep their block list and final norm.
_LAYER_PATHS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers", "transformer.blocks")
_NORM_PATHS = ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm", "model.decoder.final_layer_norm",
               "transformer.norm_f")


def _get(root: nn.Module, dotted: str) -> nn.Module | None:
    node = root
    for name in dotted.split("."):
        node = getattr(node, name, None)
        if node is None:
            return None
    return node


@dataclass
class Anatomy:
    """The decoder blocks, the final norm and the unembedding of a causal LM."""

    layers: nn.ModuleList
    final_norm: nn.Module
    unembed: nn.Module
    project_out: nn.Module | None = None  # OPT-350m style: hidden → embedding width before the head
    softcap: float | None = None  # Gemma 2: logits = cap · tanh(logits / cap)

    def logits_from_residual(self, residual: torch.Tensor) -> torch.Tensor:
        """Read a residual-stream state as the model's last layer would: final norm, (projection,) LM head, (soft cap)."""
        hidden = self.final_norm(residual)
        if self.project_out is not None:
            hidden = self.project_out(hidden)
        logits = self.unembed(hidden)
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


def anatomy(model: nn.Module) -> Anatomy:
    layers = next((m for p in _LAYER_PATHS if isinstance(m := _get(model, p), nn.ModuleList)), None)
    norm = next((m for p in _NORM_PATHS if (m := _get(model, p)) is not None), None)
    unembed = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if layers is None or norm is None or unembed is None:
        raise LmforgeError(
            f"cannot find the decoder blocks / final norm / LM head of {type(model).__name__}; "
            "the logit lens supports llama, mistral, qwen, gpt2, gpt-neox and opt style models"
        )
    config = getattr(model, "config", None)
    return Anatomy(layers, norm, unembed, project_out=_get(model, "model.decoder.project_out"),
                   softcap=getattr(config, "final_logit_softcapping", None))


def token_strings(tokenizer, ids: list[int]) -> list[str]:
    """Each token as the text it decodes to (``" the"``, not ``"Ġthe"``)."""
    return [tokenizer.decode([i]) for i in ids]


def encode(tokenizer, text: str) -> list[int]:
    if not text:
        raise LmforgeError("the text to explain is empty; pass a prompt such as \"The capital of France is\"")
    return tokenizer(text)["input_ids"]


def encode_target(tokenizer, target: str) -> list[int]:
    ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    if not ids:
        raise LmforgeError("the target is empty; pass the next token to explain, e.g. --target \" Paris\"")
    return ids
