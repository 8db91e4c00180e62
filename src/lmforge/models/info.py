"""What a model is: architecture, parameters, bytes by dtype, context length."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import torch


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's (first) parameters: where its inputs must go."""
    return next(model.parameters()).device


def tensor_bytes(model: torch.nn.Module) -> dict[str, int]:
    """Bytes held by the model's parameters and buffers, by dtype, counting shared tensors once."""
    seen: set[int] = set()
    by_dtype: Counter[str] = Counter()
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.data_ptr() in seen or tensor.device.type == "meta":
            continue
        seen.add(tensor.data_ptr())
        by_dtype[str(tensor.dtype).removeprefix("torch.")] += tensor.numel() * tensor.element_size()
    return dict(by_dtype)


def parameter_count(model: torch.nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    seen: set[int] = set()
    total = 0
    for param in model.parameters():
        if param.data_ptr() not in seen:
            seen.add(param.data_ptr())
            total += param.numel()
    return total


def disk_bytes(folder: str | Path | None) -> int | None:
    if folder is None or not Path(folder).exists():
        return None
    path = Path(folder)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def model_info(model, tokenizer=None, folder: str | Path | None = None) -> dict[str, Any]:
    config = model.config
    by_dtype = tensor_bytes(model)
    return {
        "architecture": (config.architectures or [type(model).__name__])[0],
        "model_type": config.model_type,
        "parameters": parameter_count(model),
        "bytes_by_dtype": by_dtype,
        "model_bytes": sum(by_dtype.values()),
        "disk_bytes": disk_bytes(folder),
        "context_length": getattr(config, "max_position_embeddings", None),
        "layers": getattr(config, "num_hidden_layers", None),
        "hidden_size": getattr(config, "hidden_size", None),
        "attention_heads": getattr(config, "num_attention_heads", None),
        "kv_heads": getattr(config, "num_key_value_heads", None),
        "vocab_size": getattr(config, "vocab_size", None),
        "tied_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
        "tokenizer": type(tokenizer).__name__ if tokenizer is not None else None,
    }


def precision(model: torch.nn.Module) -> dict[str, str]:
    """The dtype and device a model's weights are in, as runs record them: ``{"dtype": "bfloat16", "device": "cpu"}``."""
    return {"dtype": str(model.dtype).removeprefix("torch."), "device": str(model_device(model))}


def context_length(model) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)
