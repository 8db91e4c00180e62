"""Which GGML type each tensor of a GGUF file gets, by recipe name — the choices llama.cpp's quantizer makes
(``llama_tensor_get_type`` in llama-quant.cpp), so a file lmforge writes as ``Q4_K_M`` has the same types,
hence the same size, as llama.cpp's ``Q4_K_M`` of the same model.

A recipe has a base type for the matrices; the output head (or, when the head is tied, the token embeddings
that serve as it) gets Q6_K; the ``_M`` recipes give Q6_K to ``attn_v`` and ``ffn_down`` in the layers
``more_bits`` picks (the first and last eighth, and every third between), ``Q4_K_S`` Q5_K to the first
four ``attn_v`` and the first eighth of ``ffn_down``. A row length that a type's block does not divide
takes llama.cpp's fallback (``gguf_quants.FALLBACKS``; F16 if nothing divides); every fallback is reported.
Vectors (norms, biases) stay F32.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.compress.export.gguf_quants import FALLBACKS, FORMATS
from lmforge.errors import LmforgeError

FLOAT_TYPES = ("F32", "F16", "BF16")
RECIPES = {  # name -> base type of the matrices
    **{name: name for name in FLOAT_TYPES},
    **{name: name for name in ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q6_K")},
    "Q4_K_S": "Q4_K", "Q4_K_M": "Q4_K", "Q5_K_S": "Q5_K", "Q5_K_M": "Q5_K",
}


def more_bits(layer: int, layers: int) -> bool:
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


@dataclass
class TensorPlan:
    types: dict[str, str]  # GGUF tensor name -> GGML type name
    fallbacks: dict[str, str]  # GGUF tensor name -> "Q4_K -> Q5_0 (576 columns)"


def _block(type_name: str) -> int:
    return FORMATS[type_name].span if type_name in FORMATS else 1


def _chosen(recipe: str, base: str, name: str, layer: int | None, layers: int, tied: bool) -> str:
    if name == "output.weight" or (tied and name == "token_embd.weight"):
        return base if base == "Q8_0" else "Q6_K"
    if layer is None:
        return base
    if name.endswith("attn_v.weight"):
        if recipe in ("Q4_K_M", "Q5_K_M") and more_bits(layer, layers):
            return "Q6_K"
        if recipe == "Q4_K_S" and layer < 4:
            return "Q5_K"
    if name.endswith("ffn_down.weight"):
        if recipe in ("Q4_K_M", "Q5_K_M") and more_bits(layer, layers):
            return "Q6_K"
        if recipe == "Q4_K_S" and layer < layers // 8:
            return "Q5_K"
    if name.endswith("attn_qkv.weight") and recipe in ("Q4_K_M", "Q5_K_M"):
        return "Q5_K" if recipe == "Q4_K_M" else "Q6_K"
    return base


def plan_types(recipe: str, matrices: dict[str, int], layers: int) -> TensorPlan:
    """``matrices``: GGUF name -> row length of each 2-D weight. Layer numbers are read from ``blk.N.``."""
    if recipe not in RECIPES:
        raise LmforgeError(f"unknown GGUF type '{recipe}'; choose one of {', '.join(RECIPES)}")
    base = RECIPES[recipe]
    tied = "output.weight" not in matrices
    plan = TensorPlan({}, {})
    for name, cols in matrices.items():
        layer = int(name.split(".")[1]) if name.startswith("blk.") else None
        chosen = base if base in FLOAT_TYPES else _chosen(recipe, base, name, layer, layers, tied)
        if cols % _block(chosen):
            fallback = FALLBACKS.get(chosen, "F16")
            if cols % _block(fallback):
                fallback = "F16"
            plan.fallbacks[name] = f"{chosen} -> {fallback} ({cols} columns)"
            chosen = fallback
        plan.types[name] = chosen
    return plan
