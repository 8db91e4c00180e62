"""Bit packing of integer weight codes: two 4-bit codes per byte (int4, and the 3/2-bit grids stored in 4 bits), one per byte for int8.

Layout of a packed row: byte ``j`` holds code ``2j`` in its low nibble and code ``2j+1`` in its high nibble.
"""

from __future__ import annotations

import torch


def storage_bits(bits: int) -> int:
    """Bits each code occupies in memory: 4 for 2/3/4-bit grids, 8 for 5..8-bit grids."""
    return 4 if bits <= 4 else 8


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned codes ``[rows, cols]`` (values < 2**bits) into a ``uint8`` tensor of ``cols * storage_bits / 8`` columns."""
    codes = codes.to(torch.uint8)
    if storage_bits(bits) == 8:
        return codes.contiguous()
    if codes.shape[-1] % 2:
        raise ValueError(f"4-bit packing needs an even number of columns, got {codes.shape[-1]}")
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).contiguous()


def unpack(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """The inverse of :func:`pack`: ``uint8`` codes, one per weight."""
    if storage_bits(bits) == 8:
        return packed
    codes = torch.stack([packed & 0x0F, packed >> 4], dim=-1)
    return codes.reshape(*packed.shape[:-1], packed.shape[-1] * 2)
