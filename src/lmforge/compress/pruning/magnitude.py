"""Magnitude pruning: drop the weights with the smallest absolute value (the classic baseline)."""

from __future__ import annotations

import torch

from lmforge.compress.pruning.masks import NM, score_mask


def magnitude_mask(weight: torch.Tensor, sparsity: float, pattern: NM | None = None) -> torch.Tensor:
    """Keep-mask from |W|, per output row (or N:M within each row)."""
    return score_mask(weight.abs().float(), sparsity, pattern)
