"""Sparsity patterns as boolean keep-masks over a weight matrix ``[out_features, in_features]``.

A mask is ``True`` where a weight survives. Two patterns cover the pruning literature:

* unstructured, per output row: every row keeps the same number of weights, the ones
  with the largest score (Wanda compares weights only within one output row; SparseGPT
  and magnitude pruning use the same per-row rule here so that methods differ only in
  their scores and updates);
* N:M: in every group of M consecutive input weights of a row, N are pruned
  (the 2:4 pattern is the one NVIDIA sparse tensor cores execute).

"N:M" here follows the SparseGPT/Wanda convention: ``2:4`` keeps 2 of 4, so it is 50 % sparse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from lmforge.errors import LmforgeError


@dataclass(frozen=True)
class NM:
    """``n`` of every ``m`` consecutive weights in a row are zero (2:4 → 50 % sparse)."""

    n: int
    m: int

    def __post_init__(self) -> None:
        if self.m < 1 or self.n < 1 or self.n >= self.m:
            raise LmforgeError(f"N:M pattern {self.n}:{self.m} needs 1 ≤ N < M (e.g. 2:4 or 4:8)")

    @property
    def sparsity(self) -> float:
        return self.n / self.m

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"


def parse_pattern(pattern: str | NM | None) -> NM | None:
    """``"unstructured"``/``None`` → None; ``"2:4"`` → NM(2, 4); anything else is a user error."""
    if pattern is None or isinstance(pattern, NM):
        return pattern
    text = str(pattern).strip().lower()
    if text in {"", "unstructured"}:
        return None
    match = re.fullmatch(r"(\d+)\s*:\s*(\d+)", text)
    if not match:
        raise LmforgeError(f"unknown sparsity pattern '{pattern}': use 'unstructured' or N:M such as '2:4' or '4:8'")
    return NM(int(match.group(1)), int(match.group(2)))


def check_sparsity(sparsity: float, name: str = "sparsity") -> float:
    if not isinstance(sparsity, (int, float)) or not 0.0 <= float(sparsity) < 1.0:
        raise LmforgeError(f"{name} must be in [0, 1) (a fraction of weights to zero, e.g. 0.5); got {sparsity}")
    return float(sparsity)


def row_topk_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep the ``(1 - sparsity)`` highest-scoring entries of every row."""
    return prune_lowest_per_row(scores, int(scores.shape[1] * check_sparsity(sparsity)))


def prune_lowest_per_row(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Keep-mask without the ``count`` lowest scores of each row."""
    mask = torch.ones_like(scores, dtype=torch.bool)
    if count:
        lowest = torch.topk(scores, count, dim=1, largest=False, sorted=False).indices
        mask.scatter_(1, lowest, False)
    return mask


def nm_mask(scores: torch.Tensor, pattern: NM) -> torch.Tensor:
    """Prune the ``n`` lowest scores in every group of ``m`` consecutive columns."""
    rows, cols = scores.shape
    if cols % pattern.m:
        raise LmforgeError(f"{pattern} sparsity needs the input width ({cols}) to be a multiple of {pattern.m}")
    groups = scores.reshape(rows, cols // pattern.m, pattern.m)
    lowest = torch.topk(groups, pattern.n, dim=2, largest=False, sorted=False).indices
    mask = torch.ones_like(groups, dtype=torch.bool)
    mask.scatter_(2, lowest, False)
    return mask.reshape(rows, cols)


def score_mask(scores: torch.Tensor, sparsity: float, pattern: NM | None) -> torch.Tensor:
    """The keep-mask for importance ``scores``: N:M when a pattern is given, else per-row top-k."""
    return nm_mask(scores, pattern) if pattern is not None else row_topk_mask(scores, sparsity)


def satisfies_nm(mask: torch.Tensor, pattern: NM) -> bool:
    """True when every group of ``m`` consecutive entries in a row has exactly ``m - n`` kept."""
    rows, cols = mask.shape
    kept = mask.reshape(rows, cols // pattern.m, pattern.m).sum(dim=2)
    return bool((kept == pattern.m - pattern.n).all())


def sparsity_of(weight: torch.Tensor) -> float:
    """Fraction of exactly-zero entries."""
    return float((weight == 0).sum()) / max(weight.numel(), 1)
