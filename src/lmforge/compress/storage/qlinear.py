"""``QuantLinear``: an ``nn.Linear`` replacement that stores packed integer weights and runs on them.

Stored per layer (and saved as is): ``qweight`` (uint8; two 4-bit codes per byte for
2/3/4-bit grids, one byte per code for 8-bit), ``scales`` (float32 ``[out, groups]``),
``zeros`` (uint8 integer zero points ``[out, groups]``), optional ``bias`` and optional
``input_scale`` (activation-aware scaling that could not be folded into a previous op:
the layer computes ``(x / input_scale) @ Ŵᵀ``). The dequantized weight is
``Ŵ = (q - zero) · scale`` per group; no float copy of the weight is kept.

Forward on CPU with a few rows (decoding): the native packed kernel. With many rows
(prefill, perplexity) or on GPU: dequantize into a temporary and use the dense matmul,
which is then compute-bound anyway.

``QuantEmbedding``: the input embedding of a model whose output head is tied to it and
quantized: a lookup gathers the head's packed rows and dequantizes only those, so one
quantized table serves both ends of the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.compress.storage import kernels
from lmforge.compress.storage.packing import pack, storage_bits, unpack
from lmforge.compress.grid import dequantize_codes, expand_groups

# Up to this many rows the packed kernel beats dequantize + dense matmul on CPU.
KERNEL_MAX_ROWS = 1024  # the break-even with dequantize-then-matmul: benchmarks/results/packed_kernel_rows.json


class QuantLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bits: int, group_size: int | None,
                 bias: bool = False, input_scale: bool = False):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.bits = bits
        self.group_size = group_size or in_features
        groups = in_features // self.group_size
        stored = in_features * storage_bits(bits) // 8
        self.register_buffer("qweight", torch.zeros(out_features, stored, dtype=torch.uint8))
        self.register_buffer("scales", torch.zeros(out_features, groups, dtype=torch.float32))
        self.register_buffer("zeros", torch.zeros(out_features, groups, dtype=torch.uint8))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.register_buffer("input_scale", torch.ones(in_features) if input_scale else None)

    @classmethod
    def from_codes(cls, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int,
                   bias: torch.Tensor | None = None, input_scale: torch.Tensor | None = None) -> "QuantLinear":
        """Build from integer codes ``[out, in]`` and per-group ``scale``/``zero`` ``[out, groups]``."""
        out_features, in_features = codes.shape
        module = cls(in_features, out_features, bits, in_features // scale.shape[1],
                     bias=bias is not None, input_scale=input_scale is not None)
        module.qweight.copy_(pack(codes, bits))
        module.scales.copy_(scale.float())
        module.zeros.copy_(zero.to(torch.uint8))
        if bias is not None:
            module.bias.copy_(bias.detach().float())
        if input_scale is not None:
            module.input_scale.copy_(input_scale.float())
        return module.to(codes.device)

    def codes(self) -> torch.Tensor:
        return unpack(self.qweight, self.bits)

    def dequantize(self, dtype: torch.dtype = torch.float32, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The weight ``Ŵ [out, in]`` as the layer applies it (``input_scale`` not included); only ``rows`` if given."""
        cols, qweight, scales, zeros = self.in_features, self.qweight, self.scales, self.zeros
        if rows is not None:
            qweight, scales, zeros = (t.index_select(0, rows) for t in (qweight, scales, zeros))
        weight = dequantize_codes(unpack(qweight, self.bits), expand_groups(scales, cols), expand_groups(zeros.float(), cols))
        return weight.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_scale is not None:
            x = x / self.input_scale.to(x.dtype)
        flat = x.reshape(-1, self.in_features)
        if flat.device.type == "cpu" and flat.shape[0] <= KERNEL_MAX_ROWS and kernels.available():
            # scales go in as float32 whatever the model was cast to (``model.half()`` casts buffers too)
            out = kernels.packed_matmul(flat.float(), self.qweight, self.scales.float().contiguous(), self.zeros,
                                        storage_bits(self.bits), self.group_size).to(x.dtype)
            if self.bias is not None:
                out = out + self.bias.to(x.dtype)
        else:
            out = F.linear(flat, self.dequantize(x.dtype), None if self.bias is None else self.bias.to(x.dtype))
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, bias={self.bias is not None}")


class QuantEmbedding(nn.Module):
    """Token embeddings read from a tied, quantized output head ``[vocab, hidden]``: row t is ``Ŵ[t]``.

    The head is referenced, not registered: its buffers are saved once, under the head's name,
    and moving or copying the model moves or copies them once.
    """

    def __init__(self, head: QuantLinear, padding_idx: int | None = None):
        super().__init__()
        self.__dict__["head"] = head  # not a submodule: the state dict names the table once, as the head's
        self.num_embeddings, self.embedding_dim = head.out_features, head.in_features
        self.padding_idx = padding_idx

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = self.head.dequantize(self.head.scales.dtype, rows=input_ids.reshape(-1))
        return rows.reshape(*input_ids.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, shares the packed table of the output head ({self.head.bits}-bit)"


def execution_path(model: nn.Module) -> str | None:
    """How the model's quantized linears compute on its device (None when it has none): what `models info` prints."""
    modules = [m for m in model.modules() if isinstance(m, QuantLinear)]
    if not modules:
        return None
    device = modules[0].qweight.device
    if device.type == "cpu" and kernels.available():
        return f"cpu: native packed kernel up to {KERNEL_MAX_ROWS} rows (decoding), dequantize-then-matmul above"
    return f"{device.type}: dequantize-then-matmul (the packed weights are unpacked per call into a temporary)"
