"""Linear layers of any causal LM as ``[out, in]`` weights: ``nn.Linear`` and GPT-2's transposed ``Conv1D``.

GPT-2 (and its descendants) computes ``x @ W + b`` with ``W`` stored ``[in, out]`` in a
``transformers.pytorch_utils.Conv1D``. Compression sees every linear as ``[out, in]``: for a
``Conv1D`` the weight is its transpose, a view, so writes (pruning masks, SparseGPT updates)
land in the stored tensor and the checkpoint keeps the layout transformers expects.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv1d_type():
    from transformers.pytorch_utils import Conv1D

    return Conv1D


def is_linear(module: nn.Module) -> bool:
    """``nn.Linear`` or GPT-2's ``Conv1D``: a matrix product with an optional bias."""
    return isinstance(module, (nn.Linear, _conv1d_type()))


def is_conv1d(module: nn.Module) -> bool:
    return isinstance(module, _conv1d_type())


def linear_weight(module: nn.Module) -> torch.Tensor:
    """The weight as ``[out, in]``; for ``Conv1D`` a transposed view of the stored ``[in, out]`` tensor."""
    return module.weight.data.T if isinstance(module, _conv1d_type()) else module.weight.data


def linear_features(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features)."""
    if isinstance(module, _conv1d_type()):
        return module.nx, module.nf
    return module.in_features, module.out_features


def attention_linear_names(model: nn.Module) -> list[str]:
    """Leaf names of the linears inside attention blocks, e.g. q/k/v/o_proj (llama), qkv_proj (phi3),
    c_attn/c_proj (gpt2), query_key_value/dense (gpt-neox): LoRA's usual targets for any architecture."""
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if is_linear(module) and any(part in name for part in ("attn.", "attention."))}
    return sorted(names)
