"""Compact storage of pruned weights, and 2:4 execution on GPUs.

On disk a sparse matrix is a bitmask (one bit per entry, ``numpy.packbits``) plus
its non-zero values in row-major order, stored in safetensors. That costs
``numel/8 + nnz·itemsize`` bytes instead of ``numel·itemsize``, so it pays off
only when density < 1 − 1/(8·itemsize) (below 96.9 % for float32); denser tensors
are stored as they are.

Speed is another matter: on CPU, PyTorch's sparse kernels do not beat a dense
matmul at the 50 % sparsity LLM pruning reaches (``benchmarks/prune.py`` measures
it), so a loaded model is dense in memory. On an NVIDIA GPU (Ampere or newer),
2:4-sparse weights run on sparse tensor cores via ``to_semi_structured``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lmforge.compress.pruning.masks import NM, satisfies_nm
from lmforge.errors import LmforgeError
from lmforge.io import atomic_dir

SPARSE_FILE = "model.sparse.safetensors"
MASK_SUFFIX, VALUES_SUFFIX = ".__bitmask", ".__values"


def pack_bitmask(tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"bitmask": uint8 [ceil(numel/8)], "values": nonzeros}`` of a tensor."""
    flat = tensor.detach().reshape(-1)
    mask = flat != 0
    return {"bitmask": torch.from_numpy(np.packbits(mask.numpy())), "values": flat[mask].clone()}


def unpack_bitmask(bitmask: torch.Tensor, values: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    numel = int(np.prod(shape))
    mask = torch.from_numpy(np.unpackbits(bitmask.numpy(), count=numel).astype(bool))
    dense = torch.zeros(numel, dtype=values.dtype)
    dense[mask] = values
    return dense.reshape(shape)


def packed_bytes(tensor: torch.Tensor) -> int:
    return (tensor.numel() + 7) // 8 + int((tensor != 0).sum()) * tensor.element_size()


def packing_saves_bytes(tensor: torch.Tensor) -> bool:
    """Only 2-D float weights are packed, and only when the bitmask form is smaller."""
    return tensor.ndim == 2 and tensor.is_floating_point() and packed_bytes(tensor) < tensor.numel() * tensor.element_size()


def storage_bytes(model: nn.Module) -> int:
    """Bytes of the model's tensors as ``save_sparse`` stores them (tied tensors once)."""
    return sum(
        packed_bytes(t) if packing_saves_bytes(t) else t.numel() * t.element_size() for t in _unique_state(model).values()
    )


def _unique_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with tied tensors stored once (the first name wins; ``tie_weights`` restores the rest)."""
    seen: set[int] = set()
    state = {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        state[name] = tensor.detach().contiguous().cpu()
    return state


def save_sparse(model: nn.Module, tokenizer, out_dir: str | Path, metadata: dict | None = None, *,
                overwrite: bool = False) -> dict[str, int]:
    """Write config, tokenizer and weights (bitmask + values where that is smaller) to ``out_dir``, atomically.

    Returns ``{"dense_bytes", "stored_bytes", "packed_tensors"}``. Load with ``load_sparse``.
    """
    from safetensors.torch import save_file

    tensors, shapes = {}, {}
    dense_bytes = stored_bytes = packed = 0
    for name, tensor in _unique_state(model).items():
        dense_bytes += tensor.numel() * tensor.element_size()
        if packing_saves_bytes(tensor):
            parts = pack_bitmask(tensor)
            tensors[name + MASK_SUFFIX], tensors[name + VALUES_SUFFIX] = parts["bitmask"], parts["values"]
            shapes[name] = list(tensor.shape)
            packed += 1
        else:
            tensors[name] = tensor
    stored_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
    with atomic_dir(out_dir, "model", overwrite) as tmp:
        model.config.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        save_file(tensors, str(tmp / SPARSE_FILE), metadata={"format": "lmforge-bitmask", "shapes": json.dumps(shapes)})
        (tmp / "lmforge.json").write_text(json.dumps({"storage": "bitmask", **(metadata or {})}, indent=2, default=str))
    return {"dense_bytes": dense_bytes, "stored_bytes": stored_bytes, "packed_tensors": packed}


def load_sparse(folder: str | Path):
    """``(model, tokenizer)`` from a folder written by ``save_sparse`` (weights dense in memory)."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    if not (folder / SPARSE_FILE).is_file():
        raise LmforgeError(f"{folder} has no {SPARSE_FILE}; it was not written by save_sparse (load it with load_model)")
    with safe_open(str(folder / SPARSE_FILE), framework="pt") as handle:
        shapes = json.loads(handle.metadata()["shapes"])
        raw = {key: handle.get_tensor(key) for key in handle.keys()}
    state = {k: v for k, v in raw.items() if not k.endswith((MASK_SUFFIX, VALUES_SUFFIX))}
    for name, shape in shapes.items():
        state[name] = unpack_bitmask(raw[name + MASK_SUFFIX], raw[name + VALUES_SUFFIX], tuple(shape))
    config = AutoConfig.from_pretrained(folder)
    model = AutoModelForCausalLM.from_config(config, dtype=next(t.dtype for t in state.values() if t.is_floating_point()))
    missing, unexpected = model.load_state_dict(state, strict=False)
    model.tie_weights()
    params = model.state_dict()
    loaded = {params[name].data_ptr() for name in state if name in params}
    if unexpected or any(params[name].data_ptr() not in loaded for name in missing):
        raise LmforgeError(f"{folder}/{SPARSE_FILE} does not match its config.json; re-save the model")
    return model.eval(), AutoTokenizer.from_pretrained(folder)


def to_semi_structured(model: nn.Module) -> int:
    """Swap every 2:4-sparse decoder linear weight for a ``SparseSemiStructuredTensor`` (CUDA, fp16/bf16 only).

    Returns the number of converted linears. On CPU this raises: PyTorch has no CPU kernel for it.
    """
    if not torch.cuda.is_available():
        raise LmforgeError("2:4 semi-structured execution needs an NVIDIA GPU (Ampere or newer); on CPU keep the dense weights")
    from torch.sparse import to_sparse_semi_structured

    converted = 0
    for module in model.modules():
        if (isinstance(module, nn.Linear) and module.weight.is_cuda and module.in_features % 4 == 0
                and satisfies_nm(module.weight != 0, NM(2, 4))):
            module.weight = nn.Parameter(to_sparse_semi_structured(module.weight.detach()), requires_grad=False)
            converted += 1
    return converted


def semi_structured_on_cuda(model: nn.Module) -> int:
    """``to_semi_structured`` where it can run (a CUDA model in fp16/bf16, the dtypes its kernels take); else 0, a no-op."""
    from lmforge.models.info import model_device

    if model_device(model).type != "cuda" or model.dtype not in (torch.float16, torch.bfloat16):
        return 0
    return to_semi_structured(model)
