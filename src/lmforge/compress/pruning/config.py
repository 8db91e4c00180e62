"""Pruning configs: one dataclass per method, each saying everything ``prune`` needs."""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field
from typing import Any

from lmforge.compress.defaults import SINK_SHARE
from lmforge.compress.pruning.masks import check_sparsity, parse_pattern
from lmforge.errors import LmforgeError


@dataclass
class _PruneConfig:
    """Shared fields. ``sparsity`` is the fraction of weights set to zero in every pruned row.

    ``pattern``: ``"unstructured"`` or ``"N:M"`` (``"2:4"`` zeroes 2 of every 4; sparsity then is N/M).
    ``overrides``: ``{glob: sparsity}`` matched against linear names such as
    ``model.layers.0.self_attn.q_proj`` (first match wins), for unstructured pruning.
    ``skip``: globs of linears to leave dense (lm_head and embeddings are never pruned).
    """

    sparsity: float = 0.5
    pattern: str = "unstructured"
    overrides: dict[str, float] = field(default_factory=dict)
    skip: tuple[str, ...] = ()

    method = "base"
    needs_calibration = True  # the layer inputs, captured layer by layer
    needs_hessian = False  # their second moments X·Xᵀ, not only the column norms

    def __post_init__(self) -> None:
        self.nm = parse_pattern(self.pattern)
        self.pattern = str(self.nm) if self.nm else "unstructured"
        if self.nm is not None:
            self.sparsity = self.nm.sparsity
            if self.overrides:
                raise LmforgeError(f"per-layer sparsity overrides need unstructured pruning; {self.pattern} fixes the sparsity")
        check_sparsity(self.sparsity)
        for glob, value in self.overrides.items():
            check_sparsity(value, f"override sparsity for '{glob}'")

    def sparsity_for(self, name: str) -> float | None:
        """The sparsity of linear ``name``, or None when it is skipped."""
        if any(fnmatch.fnmatchcase(name, glob) for glob in self.skip):
            return None
        for glob, value in self.overrides.items():
            if fnmatch.fnmatchcase(name, glob):
                return value
        return self.sparsity

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **{k: v for k, v in asdict(self).items()}}


@dataclass
class Magnitude(_PruneConfig):
    """Smallest |W| per row; needs no calibration data."""

    method = "magnitude"
    needs_calibration = False


@dataclass
class Wanda(_PruneConfig):
    """Smallest |W|·‖X‖₂ per row (Sun et al., 2023)."""

    method = "wanda"


@dataclass
class SparseGPT(_PruneConfig):
    """OBS pruning with weight updates (Frantar & Alistarh, 2023); ``damp`` is relative to mean(diag H);
    ``sink_share`` as in ``GPTQ`` (the first token's least share of the Hessian; 0: unweighted)."""

    block_size: int = 128
    damp: float = 0.01
    sink_share: float = SINK_SHARE

    method = "sparsegpt"
    needs_hessian = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.block_size < 1 or self.damp <= 0 or not 0 <= self.sink_share < 1:
            raise LmforgeError(f"SparseGPT needs block_size ≥ 1, damp > 0 and sink_share in [0, 1) "
                               f"(got {self.block_size}, {self.damp}, {self.sink_share})")


@dataclass
class Structured:
    """Fractions of query heads (per key/value group) and of MLP channels to remove in every layer."""

    head_fraction: float = 0.0
    mlp_fraction: float = 0.25
    reconstruct: bool = True  # refit the kept o_proj/down_proj columns by least squares
    damp: float = 0.01  # of the mean Hessian diagonal, added before the refit's solve
    sink_share: float = SINK_SHARE  # least share of the Hessian held by each sequence's first token (as SparseGPT)

    method = "structured"
    needs_calibration = True

    def __post_init__(self) -> None:
        for name in ("head_fraction", "mlp_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise LmforgeError(f"{name} must be in [0, 1) (the share of heads/channels to remove); got {value}")
        if not 0.0 <= self.sink_share < 1.0:
            raise LmforgeError(f"sink_share must be in [0, 1) (the first token's least share of the Hessian); got {self.sink_share}")
        if self.damp < 0:
            raise LmforgeError(f"damp must be ≥ 0 (a fraction of the mean Hessian diagonal); got {self.damp}")


PruneConfig = Magnitude | Wanda | SparseGPT
METHODS: dict[str, type[_PruneConfig]] = {"magnitude": Magnitude, "wanda": Wanda, "sparsegpt": SparseGPT}
