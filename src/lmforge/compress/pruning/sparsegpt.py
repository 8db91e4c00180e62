"""SparseGPT (Frantar & Alistarh, 2023): one-shot pruning with optimal-brain-surgeon weight updates.

For a linear layer with calibration inputs X, the layer-wise objective is
‖W X − Ŵ X‖², whose Hessian is H = 2 X Xᵀ. Columns are processed left to right in
blocks; inside a block, the mask is chosen adaptively from the OBS saliency
w² / [H⁻¹]_jj², each pruned weight's error is spread over the not-yet-processed
columns of its row through the upper Cholesky factor of H⁻¹, and the accumulated
error of a whole block is applied to the columns right of it in one matrix product
(the "lazy batch" update that makes the method fast).
"""

from __future__ import annotations

import contextlib

import torch

from lmforge.compress.pruning.masks import NM, check_sparsity, prune_lowest_per_row
from lmforge.errors import LmforgeError


def inverse_hessian_cholesky(hessian: torch.Tensor, weight: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + λI)⁻¹ with λ = ``damp`` · mean(diag H); zeroes ``weight``'s dead columns.

    Input channels never active in calibration (zero diagonal) carry no information:
    their weights are set to zero and their diagonal to one so the factorization exists.
    """
    hessian = hessian.double().clone()
    dead = torch.diag(hessian) == 0
    hessian[dead, dead] = 1.0
    weight[:, dead] = 0.0
    hessian.diagonal().add_(damp * torch.diag(hessian).mean())
    try:
        lower = torch.linalg.cholesky(hessian)
    except torch.linalg.LinAlgError:
        raise LmforgeError(f"the calibration Hessian is not positive definite with damp={damp}; raise damp (e.g. 0.1)") from None
    return torch.linalg.cholesky(torch.cholesky_inverse(lower), upper=True).float()


def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float = 0.5,
    pattern: NM | None = None,
    block_size: int = 128,
    damp: float = 0.01,
) -> torch.Tensor:
    """Return the pruned and OBS-updated copy of ``weight`` ``[out, in]`` given the input Hessian ``[in, in]``.

    Unstructured: inside each block of columns, every row loses its share of weights with
    the lowest saliency, so every row ends up with exactly ``int(in · sparsity)`` zeros. N:M: the ``n`` lowest
    saliencies of every ``m`` consecutive columns, chosen when the block reaches them.
    """
    sparsity = pattern.sparsity if pattern is not None else check_sparsity(sparsity)
    if pattern is not None and block_size % pattern.m:
        raise LmforgeError(f"SparseGPT block_size {block_size} must be a multiple of M={pattern.m} for {pattern} sparsity")
    if pattern is not None and weight.shape[1] % pattern.m:
        raise LmforgeError(f"{pattern} sparsity needs the input width ({weight.shape[1]}) to be a multiple of {pattern.m}")
    if hessian.shape != (weight.shape[1], weight.shape[1]):
        raise ValueError(f"Hessian {tuple(hessian.shape)} does not match weight {tuple(weight.shape)}")
    with single_thread():
        W = weight.detach().float().clone()
        Hinv = inverse_hessian_cholesky(hessian, W, damp)
        return _prune_columns(W, Hinv, sparsity, pattern, block_size).to(weight.dtype)


@contextlib.contextmanager
def single_thread():
    """SparseGPT is thousands of tiny ops: thread hand-offs cost more than they save (10× on 2 busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _prune_columns(W: torch.Tensor, Hinv: torch.Tensor, sparsity: float, pattern: NM | None, block_size: int) -> torch.Tensor:
    """The SparseGPT sweep over the columns of ``W`` (float32, ``[out, in]``) given chol(H⁻¹)ᵀ."""
    columns = W.shape[1]
    Wt = W.T.contiguous()  # [in, out]: one input column per contiguous row, for the column loop

    for start in range(0, columns, block_size):
        end = min(start + block_size, columns)
        W1 = Wt[start:end]  # a view: updates land in Wt
        Hinv1 = Hinv[start:end, start:end]
        d = torch.diag(Hinv1)
        errors = torch.empty_like(W1)
        if pattern is None:
            # Cumulative rounding: every row loses exactly int(columns · sparsity) weights in all.
            count = int(end * sparsity) - int(start * sparsity)
            keep = prune_lowest_per_row((W1**2 / d.unsqueeze(1) ** 2).T, count).T.contiguous()
        else:
            keep = torch.ones_like(W1, dtype=torch.bool)
        for i in range(end - start):
            if pattern is not None and i % pattern.m == 0:
                saliency = W1[i : i + pattern.m] ** 2 / d[i : i + pattern.m].unsqueeze(1) ** 2
                lowest = torch.topk(saliency, pattern.n, dim=0, largest=False).indices
                keep[i : i + pattern.m].scatter_(0, lowest, False)
            error = errors[i]
            torch.mul(W1[i], ~keep[i], out=error)
            error /= d[i]
            # OBS update: remove the pruned weights of column i and compensate with the columns to its
            # right; column i itself becomes w − w = 0 where pruned (made exact by the mask below).
            W1[i:].addr_(Hinv1[i, i:], error, alpha=-1)
        W1 *= keep
        Wt[end:] -= Hinv[start:end, end:].T @ errors
    return Wt.T.contiguous()
