"""GGML block formats against gguf-py's reference (``gguf.quants``), GPTQ onto them, and the recipes' type plans."""

import gguf
import numpy as np
import pytest
import torch

from lmforge.compress.export.gguf_quants import FORMATS, pack_rows
from lmforge.compress.export.gguf_recipes import more_bits, plan_types
from lmforge.compress.quantization.gptq import gptq_on

# gguf-py 0.19 has a reference quantizer for these; for the k-quants it has only the dequantizer
WITH_REFERENCE_QUANTIZER = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")


def weights(rows=16, cols=512, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=generator) * torch.rand(rows, 1, generator=generator)
    w[0, :64] = 0  # an all-zero block and super-block part: zero scales must not produce NaN codes
    w[1, 32:64] = 0.25  # a constant block
    w[2, :32] = torch.linspace(-1, 1, 32)  # exact halves of the grid: ties round as ggml rounds them
    return w


@pytest.mark.parametrize("name", WITH_REFERENCE_QUANTIZER)
def test_round_to_nearest_is_byte_identical_to_gguf_py(name):
    fmt, w = FORMATS[name], weights()
    codes, grid = fmt.quantize(w)
    ours = pack_rows(fmt, codes, grid)
    reference = gguf.quants.quantize(w.numpy(), fmt.qtype)
    assert ours.shape == reference.shape and np.array_equal(ours, reference)


@pytest.mark.parametrize("name", FORMATS)
def test_decode_equals_gguf_py_dequantize(name):
    fmt, w = FORMATS[name], weights()
    codes, grid = fmt.quantize(w)
    decoded = gguf.quants.dequantize(pack_rows(fmt, codes, grid), fmt.qtype)
    assert np.array_equal(decoded, fmt.decode(codes, grid).numpy())
    # and the grid is a quantization of w: error well below the weights' own spread
    assert float(((decoded - w.numpy()) ** 2).mean()) < 0.05 * float((w**2).mean())


@pytest.mark.parametrize("name", ["Q4_K", "Q5_K", "Q6_K"])
def test_k_quant_fit_uses_the_importance_it_is_given(name):
    fmt, w = FORMATS[name], weights(cols=256)
    importance = torch.rand(256, generator=torch.Generator().manual_seed(1)) ** 4  # a few columns matter
    weighted = lambda codes, grid: float((importance * (fmt.decode(codes, grid) - w) ** 2).sum())
    assert weighted(*fmt.quantize(w, importance)) < weighted(*fmt.quantize(w))


@pytest.mark.parametrize("name", FORMATS)
def test_gptq_with_uncorrelated_inputs_is_round_to_nearest(name):
    """With H = I no column's error is pushed onto another, so GPTQ's codes are the fitted grid's rounding."""
    fmt, w = FORMATS[name], weights(rows=8, cols=256)
    codes, grid = gptq_on(w, torch.eye(256), fmt)
    expected, expected_grid = fmt.quantize(w, torch.ones(256))
    assert torch.equal(codes, expected)
    assert all(torch.equal(grid[k], expected_grid[k]) for k in grid)


@pytest.mark.parametrize("name", FORMATS)
def test_gptq_on_block_grids_lowers_the_output_error(name):
    fmt, w = FORMATS[name], weights(rows=32, cols=512)
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(4096, 512, generator=generator) @ (torch.eye(512) + 0.3 * torch.randn(512, 512, generator=generator) / 512**0.5)
    hessian = 2 * x.T @ x / len(x)
    error = lambda codes, grid: float(torch.trace((fmt.decode(codes, grid) - w) @ hessian @ (fmt.decode(codes, grid) - w).T))
    rtn = error(*fmt.quantize(w, torch.diag(hessian)))
    calibrated = error(*gptq_on(w, hessian, fmt))
    assert calibrated < 0.97 * rtn, (calibrated, rtn)
    codes, grid = gptq_on(w, hessian, fmt)
    assert codes.min() >= 0 and codes.max() <= fmt.qmax
    assert np.array_equal(gguf.quants.dequantize(pack_rows(fmt, codes, grid), fmt.qtype), fmt.decode(codes, grid).numpy())


@pytest.mark.parametrize("name", ["Q4_0", "Q4_K", "Q6_K"])
def test_gptq_on_block_grids_is_the_textbook_column_update(name):
    """The lazy-batch loop against the plain one: quantize column i, push ``(w_i - q_i) / U_ii · U_i,i:`` onto
    the rest of the row (U: upper Cholesky factor of H⁻¹), fitting each span's grid when reaching it."""
    fmt, w = FORMATS[name], weights(rows=8, cols=512).double()
    x = torch.randn(2048, 512, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    hessian = 2 * x.T @ x / len(x) + torch.diag(torch.linspace(0.1, 3, 512, dtype=torch.float64))
    damped = hessian + 0.01 * torch.diag(hessian).mean() * torch.eye(512, dtype=torch.float64)
    upper = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(damped)), upper=True)
    W, codes, pieces = w.clone(), torch.zeros_like(w), []
    for i in range(512):
        if i % fmt.span == 0:
            pieces.append(fmt.fit(W[:, i : i + fmt.span].float(), torch.diag(hessian)[i : i + fmt.span].float()))
        groups = slice((i % fmt.span) // fmt.group, (i % fmt.span) // fmt.group + 1)
        q = fmt.encode(W[:, i : i + 1].float(), pieces[-1], groups)
        codes[:, i : i + 1] = q.double()
        error = (W[:, i : i + 1] - fmt.decode(q, pieces[-1], groups).double()) / upper[i, i]
        W[:, i:] -= error @ upper[i : i + 1, i:]
    ours, _ = gptq_on(w, hessian, fmt)
    assert (ours != codes).float().mean() < 1e-3  # float rounding may flip a rare tie


def test_recipes_give_llama_cpps_types_and_fallbacks():
    layers = 16
    matrices = {"token_embd.weight": 576, "output.weight": 576}
    for i in range(layers):
        matrices |= {f"blk.{i}.attn_v.weight": 256, f"blk.{i}.attn_q.weight": 576, f"blk.{i}.ffn_down.weight": 1536}
    plan = plan_types("Q4_K_M", matrices, layers)
    assert [i for i in range(layers) if more_bits(i, layers)] == [0, 1, 4, 7, 10, 13, 14, 15]
    assert plan.types["blk.4.attn_v.weight"] == "Q6_K" and plan.types["blk.5.attn_v.weight"] == "Q4_K"
    assert plan.types["blk.7.ffn_down.weight"] == "Q6_K" and plan.types["blk.8.ffn_down.weight"] == "Q4_K"
    assert plan.types["blk.3.attn_q.weight"] == "Q5_0"  # 576 columns: Q4_K's 256 does not divide them
    assert plan.fallbacks["blk.3.attn_q.weight"] == "Q4_K -> Q5_0 (576 columns)"
    assert plan.types["output.weight"] == "Q8_0" and plan.types["token_embd.weight"] == "Q5_0"
    tied = plan_types("Q4_0", {k: v for k, v in matrices.items() if k != "output.weight"}, layers)
    assert tied.types["token_embd.weight"] == "Q8_0"  # the tied head's Q6_K falls back to Q8_0
    assert plan_types("Q5_1", {"blk.0.attn_q.weight": 48}, 1).types["blk.0.attn_q.weight"] == "F16"
