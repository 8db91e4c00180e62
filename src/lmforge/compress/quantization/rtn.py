"""Round-to-nearest quantization on the uniform grid of ``compress.grid``."""

from __future__ import annotations

import torch

from lmforge.compress.grid import expand_groups, group_grid, quantize_codes


def rtn(weight: torch.Tensor, bits: int, group_size: int | None = None, symmetric: bool = True):
    """Round-to-nearest: ``(codes [rows, cols] uint8, scale [rows, groups], zero [rows, groups])``."""
    weight = weight if weight.dtype == torch.float64 else weight.float()
    scale, zero = group_grid(weight, bits, group_size, symmetric)
    cols = weight.shape[1]
    codes = quantize_codes(weight, expand_groups(scale, cols), expand_groups(zero, cols), bits)
    return codes.to(torch.uint8), scale, zero
