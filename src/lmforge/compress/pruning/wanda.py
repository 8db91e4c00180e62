"""Wanda (Sun et al., 2023): prune by |W_ij| · ‖X_j‖₂, compared within each output row.

The score weighs a weight by the norm of the input feature it multiplies, measured on
calibration data, so a small weight on a large activation is kept. No weight update.
"""

from __future__ import annotations

import torch

from lmforge.compress.pruning.masks import NM, score_mask


def wanda_scores(weight: torch.Tensor, input_sq_norms: torch.Tensor) -> torch.Tensor:
    """``|W| · ‖X_j‖₂`` from per-input-channel sums of squares ``Σ_t x_tj²`` (shape ``[in_features]``)."""
    return weight.abs().float() * input_sq_norms.float().clamp_min(0).sqrt().unsqueeze(0)


def wanda_mask(weight: torch.Tensor, input_sq_norms: torch.Tensor, sparsity: float, pattern: NM | None = None) -> torch.Tensor:
    """Keep-mask of the Wanda scores, per output row (or N:M within each row)."""
    return score_mask(wanda_scores(weight, input_sq_norms), sparsity, pattern)
