"""GPTQ (Frantar et al., 2022): quantize a weight column by column, pushing each column's rounding
error onto the columns not yet quantized, weighted by the inverse Hessian of the layer inputs.

For ``Y = W X`` and ``H = 2 X Xᵀ / n``, quantizing column ``i`` to ``q_i`` and updating the
rest by ``-(w_i - q_i) / [H⁻¹]_ii · [H⁻¹]_i,:`` is the optimal brain surgeon step. The
sequence of inverses is read off one upper Cholesky factor of ``H⁻¹``; updates inside a
block of ``block_size`` columns are applied at once to the rest ("lazy batch").

Groups: a group's scale and zero are set from the (already updated) weights when its
first column is reached. With ``act_order`` (columns in order of decreasing ``H_ii``),
groups are "static": computed from the original weights before any update, so each
group still covers contiguous input columns and the packed layout needs no index.
The grid is a parameter (``gptq_on``): lmforge's uniform grid, or GGML's block formats,
whose k-quants fit 8 or 16 sub-block scales under one super-block scale at once.
"""

from __future__ import annotations

import logging

import torch

from lmforge.compress.grid import UniformGrid
from lmforge.errors import LmforgeError

log = logging.getLogger(__name__)

_MAX_DAMP = 10.0


def inverse_hessian_factor(hessian: torch.Tensor, damp: float, name: str = "layer") -> torch.Tensor:
    """Upper Cholesky factor of ``(H + λ I)⁻¹`` with ``λ = damp · mean(diag H)``; more damping if H won't factor."""
    mean_diag = torch.mean(torch.diag(hessian))
    eye = torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)
    current = damp
    while current <= _MAX_DAMP:
        damped = hessian + current * mean_diag * eye
        lower, info = torch.linalg.cholesky_ex(damped)
        if info == 0:
            inverse = torch.cholesky_inverse(lower)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if info == 0:
                if current != damp:
                    log.warning("%s: Hessian not positive definite with damp=%g; used damp=%g", name, damp, current)
                return upper
        current *= 10
    raise LmforgeError(f"{name}: the calibration Hessian cannot be factored even with damp={_MAX_DAMP}; "
                       "use more calibration samples or RTN for this layer")


def gptq(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    bits: int,
    group_size: int | None = None,
    symmetric: bool = True,
    act_order: bool = False,
    damp: float = 0.01,
    block_size: int = 128,
    name: str = "layer",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize ``weight [rows, cols]`` given ``hessian [cols, cols]``: ``(codes uint8, scale, zero)`` like ``rtn``."""
    target = UniformGrid(bits, symmetric, group_size or weight.shape[1])
    codes, fitted = gptq_on(weight, hessian, target, act_order, act_order or group_size is None, damp, block_size, name)
    return codes.to(torch.uint8), fitted["scale"], fitted["zero"]


def gptq_on(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    target,
    act_order: bool = False,
    static: bool = False,
    damp: float = 0.01,
    block_size: int = 128,
    name: str = "layer",
) -> tuple[torch.Tensor, dict]:
    """GPTQ onto any grid ``target``: ``(codes [rows, cols] float, grid)``.

    ``target`` (``compress.grid.UniformGrid``, or a GGUF ``BlockFormat``) has ``span`` (columns fitted
    together), ``group`` (columns sharing one scale), ``fit(w [rows, k·span], importance) -> grid`` (a dict of
    ``[rows, ·]`` tensors whose fits of successive spans concatenate along dim 1), and ``encode``/``decode``
    of codes for a slice of groups. The importance handed to ``fit`` is ``diag(H)``: each column's mean
    squared input, the weight a calibrated fit gives its rounding error. ``act_order``: visit columns in
    order of decreasing ``H_ii``, which needs ``static``: the whole matrix fitted from the original weights first.
    """
    rows, cols = weight.shape
    span, size = target.span, target.group
    static = static or act_order
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    W = weight.detach().to(dtype).clone()
    H = hessian.detach().to(dtype).clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    importance = torch.diag(H).float()

    pieces = [target.fit(W.float(), importance)] if static else []
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(cols, device=W.device)
    W, H = W[:, perm], H[perm][:, perm]
    Hinv = inverse_hessian_factor(H, damp, name)

    codes = torch.zeros_like(W)
    # a span must never straddle two blocks: its grid is fitted from the block's updated columns
    block = max(block_size // span, 1) * span if not static else block_size
    for start in range(0, cols, block):
        end = min(start + block, cols)
        W1 = W[:, start:end].clone()
        errors = torch.zeros_like(W1)
        Hinv1 = Hinv[start:end, start:end]
        for i in range(end - start):
            column = start + i
            if not static and column % span == 0:
                pieces.append(target.fit(W1[:, i : i + span].float(), importance[column : column + span]))
            group = int(perm[column]) // size if static else (column % span) // size
            groups = slice(group, group + 1)
            w = W1[:, i : i + 1]
            q = target.encode(w.float(), pieces[-1], groups)
            codes[:, column : column + 1] = q.to(dtype)
            error = (w - target.decode(q, pieces[-1], groups).to(dtype)) / Hinv1[i, i]
            W1[:, i:] -= error @ Hinv1[i, i:].unsqueeze(0)
            errors[:, i : i + 1] = error
        W[:, end:] -= errors @ Hinv[start:end, end:]

    codes = codes[:, torch.argsort(perm)]
    fitted = {key: torch.cat([piece[key] for piece in pieces], dim=1) for key in pieces[0]}
    return codes.float(), fitted
