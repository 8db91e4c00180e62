"""Activation-aware weight quantization (after Lin et al., 2023, AWQ): protect the input channels
that carry large activations by scaling them up before quantizing.

For linears sharing an input ``X``: ``W X = (W·diag(s)) (diag(s)⁻¹ X)``. Quantizing ``W·diag(s)``
with ``s_j = mean|x_j|^α`` gives the salient channels a finer relative grid; ``1/s`` is
folded into the op that produced ``X`` (a norm's weight) or applied to the input at run time.
α is chosen from a grid by the output error on calibration rows; α = 0 is plain RTN,
so the search never does worse than RTN on the calibration data.
"""

from __future__ import annotations

import torch

from lmforge.compress.grid import dequantize_codes, expand_groups
from lmforge.compress.quantization.rtn import rtn


def rtn_dequantized(weight: torch.Tensor, bits: int, group_size: int | None, symmetric: bool) -> torch.Tensor:
    codes, scale, zero = rtn(weight, bits, group_size, symmetric)
    cols = weight.shape[1]
    return dequantize_codes(codes, expand_groups(scale, cols), expand_groups(zero, cols))


def search_scales(
    weights: list[torch.Tensor],
    x: torch.Tensor,
    abs_mean: torch.Tensor,
    bits: int,
    group_size: int | None,
    symmetric: bool,
    grid: int = 20,
) -> tuple[torch.Tensor, float, float, float]:
    """Input-channel scales ``s [in]`` minimizing ``Σ ‖X Wᵀ − (X/s) Q(W·s)ᵀ‖²`` over the linears ``weights``.

    Returns ``(s, alpha, error, rtn_error)``, errors relative to ``‖X Wᵀ‖²``.
    """
    x = x.float()
    references = [x @ w.float().T for w in weights]
    norm = sum(float(r.square().sum()) for r in references) or 1.0
    base = abs_mean.float().clamp_min(1e-8)
    best = (torch.ones_like(base), 0.0, float("inf"))
    rtn_error = float("nan")
    for step in range(grid):
        alpha = step / grid
        s = base.pow(alpha)
        s = s / (s.max() * s.min()).sqrt()
        error = 0.0
        for w, reference in zip(weights, references):
            approx = rtn_dequantized(w.float() * s, bits, group_size, symmetric) / s
            error += float((x @ approx.T - reference).square().sum())
        error /= norm
        if step == 0:
            rtn_error = error
        if error < best[2]:
            best = (s, alpha, error)
    return best[0], best[1], best[2], rtn_error
