import pytest
import torch

from lmforge.compress.quantization.gptq import gptq, inverse_hessian_factor
from lmforge.compress.quantization.rtn import rtn
from lmforge.errors import LmforgeError


def correlated_inputs(cols=64, n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(cols, cols // 4, generator=g, dtype=torch.float64)
    x = mixing @ torch.randn(cols // 4, n, generator=g, dtype=torch.float64)
    x += 0.1 * torch.randn(cols, n, generator=g, dtype=torch.float64)  # low-rank signal plus noise
    x[: cols // 8] *= 4.0  # a few channels with large activations
    return x


def dequant(codes, scale, zero):
    size = codes.shape[1] // scale.shape[1]
    return (codes.double() - zero.double().repeat_interleave(size, 1)) * scale.double().repeat_interleave(size, 1)


def reference_gptq(weight, hessian, bits, group_size, symmetric, damp, act_order):
    """Optimal-brain-surgeon quantization, one column at a time, with the full inverse Hessian
    downdated after each column. No Cholesky trick, no blocks."""
    W = weight.double().clone()
    H = hessian.double().clone()
    H += damp * torch.mean(torch.diag(H)) * torch.eye(H.shape[0], dtype=torch.float64)
    Hinv = torch.linalg.inv(H)
    rows, cols = W.shape
    size = group_size or cols
    maxq = 2**bits - 1

    def group_grid(block):
        low = torch.clamp(block.min(dim=1).values, max=0)
        high = torch.clamp(block.max(dim=1).values, min=0)
        if symmetric:
            high = torch.maximum(-low, high)
            low = -high
        scale = (high - low) / maxq
        zero = torch.full_like(scale, (maxq + 1) // 2) if symmetric else torch.round(-low / scale)
        return scale, zero

    order = torch.argsort(torch.diag(hessian), descending=True).tolist() if act_order else list(range(cols))
    static = act_order or group_size is None
    grids = {g: group_grid(W[:, g * size : (g + 1) * size]) for g in range(cols // size)} if static else {}
    Q = torch.zeros_like(W)
    remaining = list(order)
    for i in order:
        if not static and i % size == 0:
            grids[i // size] = group_grid(W[:, i : i + size])
        scale, zero = grids[i // size]
        q = (torch.clamp(torch.round(W[:, i] / scale) + zero, 0, maxq) - zero) * scale
        Q[:, i] = q
        error = (W[:, i] - q) / Hinv[i, i]
        remaining.remove(i)
        W[:, remaining] -= error[:, None] * Hinv[i, remaining][None, :]
        Hinv = Hinv - Hinv[:, i : i + 1] @ Hinv[i : i + 1, :] / Hinv[i, i]
    return Q


@pytest.mark.parametrize("bits,group_size,symmetric,act_order", [
    (4, 16, True, False), (3, 16, False, False), (4, None, True, False), (4, 16, True, True),
])
def test_gptq_matches_column_by_column_reference_and_beats_rtn(bits, group_size, symmetric, act_order):
    x = correlated_inputs()
    weight = torch.randn(24, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    hessian = 2 * x @ x.T / x.shape[1]
    expected = reference_gptq(weight, hessian, bits, group_size, symmetric, 0.01, act_order)
    # small blocks so that the lazy block updates are exercised
    got = dequant(*gptq(weight, hessian, bits, group_size, symmetric, act_order, damp=0.01, block_size=32))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)

    got32 = dequant(*gptq(weight.float(), hessian.float(), bits, group_size, symmetric, act_order, block_size=32))
    error = lambda w: (weight @ x - w @ x).norm().item()  # noqa: E731
    assert abs(error(got32) - error(expected)) <= 1e-4 * error(expected)
    assert error(got32) < 0.8 * error(dequant(*rtn(weight, bits, group_size, symmetric)))


def test_singular_hessian_gets_more_damping_and_a_warning(caplog):
    x = torch.randn(16, 4, dtype=torch.float64)
    hessian = x @ x.T  # rank 4 of 16 ...
    hessian -= 0.05 * torch.diag(hessian).mean() * torch.eye(16, dtype=torch.float64)  # ... and indefinite
    with pytest.raises(RuntimeError):
        torch.linalg.cholesky(hessian + 0.01 * torch.diag(hessian).mean() * torch.eye(16, dtype=torch.float64))
    upper = inverse_hessian_factor(hessian, 0.01, "blk.0")
    assert torch.isfinite(upper).all()
    assert "damp" in caplog.text and "blk.0" in caplog.text
    with pytest.raises(LmforgeError, match="cannot be factored"):
        inverse_hessian_factor(torch.full((4, 4), float("nan"), dtype=torch.float64), 0.01)


def test_dead_input_columns_are_zeroed_not_crashing():
    x = correlated_inputs(cols=32)
    x[3] = 0
    weight = torch.randn(8, 32, dtype=torch.float64)
    codes, scale, zero = gptq(weight, 2 * x @ x.T / x.shape[1], 4, 16)
    assert dequant(codes, scale, zero)[:, 3].abs().max() <= scale.max()
