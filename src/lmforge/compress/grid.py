"""The uniform quantization grid, per output channel or per group of input columns, shared by every method and
by the packed storage.

The grid of a group: ``w ≈ (q - z) · s`` with integer codes ``q ∈ [0, 2**bits - 1]``.
Asymmetric: the range ``[min(w, 0), max(w, 0)]`` spans the codes, ``z`` is the rounded
code of 0. Symmetric: ``s = 2·max|w| / (2**bits - 1)`` and ``z = 2**(bits-1)``, so the
grid is centred on 0 (codes -8..7 times ``s`` for int4). GPTQ and AWQ use the same grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def grid(weight: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of each row of ``weight`` (one group per row): two ``[rows]`` float tensors."""
    maxq = 2**bits - 1
    w = weight if weight.dtype == torch.float64 else weight.float()
    low = w.min(dim=1).values.clamp(max=0)
    high = w.max(dim=1).values.clamp(min=0)
    if symmetric:
        high = torch.maximum(low.abs(), high)
        low = -high
    # an all-zero group gets a unit range instead of a zero scale
    empty = (low == 0) & (high == 0)
    low = torch.where(empty, -1.0, low)
    high = torch.where(empty, 1.0, high)
    scale = (high - low) / maxq
    if symmetric:
        zero = torch.full_like(scale, (maxq + 1) // 2)
    else:
        zero = torch.round(-low / scale)
    return scale, zero


def quantize_codes(weight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes ``clamp(round(w / s) + z, 0, 2**bits - 1)`` with ``scale``/``zero`` broadcast against ``weight``."""
    return torch.clamp(torch.round(weight / scale) + zero, 0, 2**bits - 1)


def dequantize_codes(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return (codes.to(scale.dtype) - zero) * scale


def group_grid(weight: torch.Tensor, bits: int, group_size: int | None, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scales and zero points ``[rows, groups]`` for groups of ``group_size`` input columns (None: one per row)."""
    rows, cols = weight.shape
    size = group_size or cols
    scale, zero = grid(weight.reshape(rows * (cols // size), size), bits, symmetric)
    return scale.reshape(rows, -1), zero.reshape(rows, -1)


def expand_groups(per_group: torch.Tensor, cols: int) -> torch.Tensor:
    """``[rows, groups]`` → ``[rows, cols]``, each group's value repeated over its columns."""
    return per_group.repeat_interleave(cols // per_group.shape[1], dim=1)


@dataclass(frozen=True)
class UniformGrid:
    """This grid as a target for GPTQ (``quantization.gptq.gptq_on``): groups of ``group`` columns, each fitted
    from the (error-updated) weights when GPTQ reaches its first column."""

    bits: int
    symmetric: bool
    group: int

    @property
    def span(self) -> int:
        return self.group

    def fit(self, weight: torch.Tensor, importance: torch.Tensor | None = None) -> dict:
        scale, zero = group_grid(weight, self.bits, self.group, self.symmetric)
        return {"scale": scale, "zero": zero}

    def encode(self, weight: torch.Tensor, grid: dict, groups: slice) -> torch.Tensor:
        cols = weight.shape[1]
        return quantize_codes(weight, *(grid[k][:, groups].repeat_interleave(cols // _width(groups, grid), 1)
                                        for k in ("scale", "zero")), self.bits)

    def decode(self, codes: torch.Tensor, grid: dict, groups: slice) -> torch.Tensor:
        cols = codes.shape[1]
        return dequantize_codes(codes, *(grid[k][:, groups].repeat_interleave(cols // _width(groups, grid), 1)
                                         for k in ("scale", "zero")))


def _width(groups: slice, grid: dict) -> int:
    return len(range(grid["scale"].shape[1])[groups])
