"""Pruning: configs, masks, the algorithms on tensors (magnitude, Wanda, SparseGPT, structured) and the model driver."""

from lmforge.compress.pruning.config import Magnitude, PruneConfig, SparseGPT, Structured, Wanda
from lmforge.compress.pruning.driver import PruneResult, prune, prune_then_quantize
from lmforge.compress.pruning.structured import StructuredResult, structured_prune

__all__ = [
    "Magnitude",
    "PruneConfig",
    "PruneResult",
    "SparseGPT",
    "Structured",
    "StructuredResult",
    "Wanda",
    "prune",
    "prune_then_quantize",
    "structured_prune",
]
