"""Compression: quantization (RTN, GPTQ, activation-aware) and pruning, layer by layer, with packed storage."""

from lmforge.compress.sequential import decoder_layers, layerwise, linear_groups, linear_input_stats
from lmforge.compress.config import AWQ, GPTQ, RTN, QuantConfig
from lmforge.compress.qlinear import QuantLinear
from lmforge.compress.quantize import QuantReport, is_quantized, quantize
from lmforge.compress.serialize import save_quantized
from lmforge.compress.prune import Magnitude, PruneResult, SparseGPT, Wanda, prune, prune_then_quantize
from lmforge.compress.structured import Structured, structured_prune
from lmforge.compress.sparse_storage import load_sparse, save_sparse
from lmforge.compress.compare import compress_and_compare
from lmforge.compress.export import export_compressed_tensors
from lmforge.compress.export_gguf import export_gguf

__all__ = [
    "AWQ",
    "GPTQ",
    "Magnitude",
    "PruneResult",
    "QuantConfig",
    "QuantLinear",
    "QuantReport",
    "RTN",
    "SparseGPT",
    "Structured",
    "Wanda",
    "compress_and_compare",
    "decoder_layers",
    "export_compressed_tensors",
    "export_gguf",
    "is_quantized",
    "layerwise",
    "linear_groups",
    "linear_input_stats",
    "load_sparse",
    "prune",
    "prune_then_quantize",
    "quantize",
    "save_quantized",
    "save_sparse",
    "structured_prune",
]
