"""Export a quantized model to the compressed-tensors "pack-quantized" format (read by transformers and vLLM).

compressed-tensors stores, per quantized linear, ``weight_packed`` (int32, ``32 // bits`` codes per
word, code ``i`` of a word in bits ``[bits·i, bits·(i+1))``), ``weight_scale`` ``[out, groups]`` and
``weight_shape``; codes are signed ``q - 2**(bits-1)`` stored with that offset added back, i.e. our
unsigned codes. Its symmetric grid ``w = (q - 2**(bits-1)) · scale`` is ours, so the export is exact.
Asymmetric grids and unfolded activation-aware input scales have no exact counterpart and are refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import save_file

from lmforge.compress.storage.qlinear import QuantEmbedding, QuantLinear
from lmforge.errors import LmforgeError
from lmforge.io import atomic_dir


def pack_int32(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned codes ``[rows, cols]`` → int32 ``[rows, ceil(cols / (32 // bits))]``, first code in the lowest bits."""
    factor = 32 // bits
    rows, cols = codes.shape
    padded = torch.zeros(rows, -(-cols // factor) * factor, dtype=torch.int64)
    padded[:, :cols] = codes.to(torch.int64)
    words = torch.zeros(rows, padded.shape[1] // factor, dtype=torch.int64)
    for i in range(factor):
        words |= padded[:, i::factor] << (bits * i)
    return (words - ((words >> 31) << 32)).to(torch.int32)  # the same 32 bits, read as a signed int32


def quantized_linears(model) -> dict[str, QuantLinear]:
    """The model's packed linears by name; a one-line error if it has none (shared by both exports)."""
    quantized = {name: m for name, m in model.named_modules() if isinstance(m, QuantLinear)}
    if not quantized:
        raise LmforgeError("the model has no quantized layers to export")
    if isinstance(model.get_input_embeddings(), QuantEmbedding):
        raise LmforgeError("the embeddings are read from the quantized output head (share_embeddings), which this "
                           "export cannot express: quantize again without --share-embeddings to export")
    return quantized


def unquantized_tensors(model, quantized: dict[str, QuantLinear]) -> Iterator[tuple[str, torch.Tensor]]:
    """The state dict outside the packed linears, a tensor shared by two names (tied lm_head = embeddings) once."""
    quantized_prefixes = tuple(f"{name}." for name in quantized)
    seen = set()
    for key, tensor in model.state_dict().items():
        if key.startswith(quantized_prefixes) or tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        yield key, tensor.detach()


def _refuse_transposed_layers(model, quantized: dict[str, QuantLinear]) -> None:
    """compressed-tensors replaces ``nn.Linear`` modules only: a quantized GPT-2 ``Conv1D`` would load unquantized and wrong."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(model.config)
    transposed = [name for name in quantized if not isinstance(fresh.get_submodule(name), torch.nn.Linear)]
    if transposed:
        raise LmforgeError(f"compressed-tensors cannot hold {model.config.model_type}'s Conv1D layers (e.g. {transposed[0]}): "
                           "transformers would load them unquantized; keep lmforge's packed folder for this architecture")


def export_compressed_tensors(model, tokenizer, out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``model`` (quantized with symmetric grids) as a compressed-tensors pack-quantized folder."""
    quantized = quantized_linears(model)
    _refuse_transposed_layers(model, quantized)
    for name, module in quantized.items():
        if module.input_scale is not None:
            raise LmforgeError(f"{name} keeps an activation-aware input scale that compressed-tensors cannot express; "
                               "export a GPTQ or RTN model")
        if not bool((module.zeros == 2 ** (module.bits - 1)).all()):
            raise LmforgeError(f"{name} uses an asymmetric grid; the compressed-tensors export needs --symmetric")
    schemes = {(m.bits, m.group_size == m.in_features, m.group_size) for m in quantized.values()}
    if len(schemes) != 1:
        raise LmforgeError("layers use different bit widths or group sizes; the export writes one scheme")
    bits, per_channel, group_size = schemes.pop()
    weights = {"num_bits": bits, "type": "int", "symmetric": True, "dynamic": False, "observer": "minmax",
               "strategy": "channel" if per_channel else "group", "group_size": None if per_channel else group_size}
    state = {key: tensor.contiguous() for key, tensor in unquantized_tensors(model, quantized)}
    for name, module in quantized.items():
        state[f"{name}.weight_packed"] = pack_int32(module.codes(), bits)
        state[f"{name}.weight_scale"] = module.scales.detach().clone()
        state[f"{name}.weight_shape"] = torch.tensor([module.out_features, module.in_features], dtype=torch.int32)
        if module.bias is not None:
            state[f"{name}.bias"] = module.bias.detach().clone()
    skipped = sorted(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear))
    config = model.config.to_dict()
    config["quantization_config"] = {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": None,
                                      "output_activations": None, "format": "pack-quantized"}},
        "ignore": skipped,
        "kv_cache_scheme": None,
    }
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, "model", overwrite) as tmp:
        type(model.config).from_dict(config).save_pretrained(tmp)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp)
    return out_dir
