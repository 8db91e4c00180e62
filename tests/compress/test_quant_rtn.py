import itertools

import pytest
import torch

from lmforge.compress.quantization.rtn import rtn


def brute_force(weight, bits, group_size, symmetric):
    """Per group, in Python floats: the grid from the issue's definition, then the nearest of all 2**bits codes."""
    maxq = 2**bits - 1
    rows, cols = weight.shape
    size = group_size or cols
    out = torch.zeros(rows, cols, dtype=torch.float64)
    for r, g in itertools.product(range(rows), range(cols // size)):
        values = [float(v) for v in weight[r, g * size : (g + 1) * size]]
        low, high = min(min(values), 0.0), max(max(values), 0.0)
        if symmetric:
            high = max(abs(low), high)
            low = -high
        if low == high == 0:
            low, high = -1.0, 1.0
        scale = (high - low) / maxq
        zero = (maxq + 1) // 2 if symmetric else round(-low / scale)
        levels = [(q - zero) * scale for q in range(maxq + 1)]
        for j, v in enumerate(values):
            # the nearest level; an exact tie (e.g. ±max of a symmetric group) goes to the even step, as in round-half-even
            best = min(range(maxq + 1), key=lambda q: (round(abs(v - levels[q]) / scale, 9), (q - zero) % 2))
            out[r, g * size + j] = levels[best]
    return out


@pytest.mark.parametrize("bits,group_size,symmetric", [
    (8, None, True), (8, 16, False), (4, 16, True), (4, 16, False), (4, None, False), (3, 8, True), (2, 8, False),
])
def test_rtn_equals_brute_force_per_group_quantizer(bits, group_size, symmetric):
    weight = torch.randn(6, 32, generator=torch.Generator().manual_seed(bits), dtype=torch.float64)
    weight[1, :16] = 0.0  # an all-zero group
    weight[2] += 0.7  # a group with no negative values
    codes, scale, zero = rtn(weight, bits, group_size, symmetric)
    assert codes.dtype == torch.uint8 and int(codes.max()) <= 2**bits - 1
    size = group_size or 32
    dequant = (codes.double() - zero.repeat_interleave(size, 1)) * scale.repeat_interleave(size, 1)
    torch.testing.assert_close(dequant, brute_force(weight, bits, group_size, symmetric), rtol=0, atol=1e-12)


def test_rtn_error_shrinks_with_bits_and_groups():
    weight = torch.randn(64, 256, generator=torch.Generator().manual_seed(0))

    def error(bits, group_size):
        codes, scale, zero = rtn(weight, bits, group_size, True)
        size = group_size or 256
        return ((codes.float() - zero.repeat_interleave(size, 1)) * scale.repeat_interleave(size, 1) - weight).norm()

    assert error(8, None) < error(4, 64) < error(4, None) < error(3, None) < error(2, None)
