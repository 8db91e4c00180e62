"""Save and reload a quantized model as a safetensors folder, without re-quantizing.

The folder is a Hugging Face folder (config.json, tokenizer files) whose
``model.safetensors`` holds the packed ``QuantLinear`` buffers (``qweight`` uint8,
``scales``, ``zeros``, ...) next to the full-precision tensors, and whose ``lmforge.json``
has a ``quantization`` section naming every quantized linear and its grid.
``lmforge.models.load_model(folder)`` sees that section and calls ``load_quantized_model``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model as load_safetensors_into
from safetensors.torch import save_model as save_safetensors_from

from lmforge.compress.storage.qlinear import QuantEmbedding, QuantLinear
from lmforge.errors import LmforgeError
from lmforge.io import atomic_dir, write_json
from lmforge.models.linears import linear_features
from lmforge.models.loading import METADATA_FILE, read_metadata

FORMAT = "lmforge-packed"
VERSION = 1
WEIGHTS_FILE = "model.safetensors"


def quantization_metadata(model, report: dict[str, Any] | None = None) -> dict[str, Any]:
    modules = {
        name: {"bits": m.bits, "group_size": m.group_size, "bias": m.bias is not None, "input_scale": m.input_scale is not None}
        for name, m in model.named_modules() if isinstance(m, QuantLinear)
    }
    section = {"format": FORMAT, "version": VERSION, "modules": modules}
    embeddings = model.get_input_embeddings()
    if isinstance(embeddings, QuantEmbedding):  # read from the quantized head: nothing of its own to save
        section["shared_embeddings"] = next(name for name, m in model.named_modules() if m is embeddings.head)
    if report:
        section["config"] = report.get("config")
        section["skipped"] = report.get("skipped")
    return section


def save_quantized(model, tokenizer, out_dir: str | os.PathLike, report: dict[str, Any] | None = None,
                   metadata: dict[str, Any] | None = None, *, overwrite: bool = False) -> Path:
    """Write the quantized ``model`` and ``tokenizer`` to ``out_dir`` atomically (``overwrite``: see ``save_model``)."""
    if not any(isinstance(m, QuantLinear) for m in model.modules()):
        raise LmforgeError("the model has no quantized layers; save it with lmforge.models.save_model")
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, "model", overwrite) as tmp:
        model.config.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        save_safetensors_from(model, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp)
        write_json(tmp / METADATA_FILE, {**(metadata or {}), "quantization": quantization_metadata(model, report)})
    return out_dir


def _tied_names(model) -> set[str]:
    """Names of parameters that share storage with another one (tied embeddings), saved once."""
    by_pointer: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        by_pointer.setdefault(tensor.data_ptr(), []).append(name)
    return {name for names in by_pointer.values() if len(names) > 1 for name in names}


def load_quantized_model(folder: str | os.PathLike, dtype: torch.dtype | None = None):
    """Rebuild the model from config.json, swap in empty ``QuantLinear``s and load the packed tensors."""
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(folder)
    section = read_metadata(folder).get("quantization") or {}
    if section.get("format") != FORMAT:
        raise LmforgeError(f"{folder} has quantization format {section.get('format')!r}; this lmforge reads '{FORMAT}'")
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32)
    for name, spec in section["modules"].items():
        in_features, out_features = linear_features(model.get_submodule(name))
        shell = QuantLinear(in_features, out_features, spec["bits"], spec["group_size"],
                            bias=spec["bias"], input_scale=spec["input_scale"])
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, shell)
    if head := section.get("shared_embeddings"):
        model.set_input_embeddings(QuantEmbedding(model.get_submodule(head), model.get_input_embeddings().padding_idx))
    missing, unexpected = load_safetensors_into(model, str(folder / WEIGHTS_FILE), strict=False)
    if not head:
        model.tie_weights()
    tied = _tied_names(model)
    missing = [name for name in missing if name not in tied]
    if missing or unexpected:
        raise LmforgeError(f"{folder / WEIGHTS_FILE} does not match its lmforge.json "
                           f"(missing {len(missing)}, unexpected {len(unexpected)} tensors); re-save the model")
    return model.eval()
