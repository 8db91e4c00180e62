"""Compression, by kind: ``quantization`` (RTN, GPTQ, activation-aware), ``pruning`` (magnitude, Wanda, SparseGPT,
2:4, structured), ``storage`` (packed low-bit linears, bitmask sparse weights, save/reload) and ``export``
(compressed-tensors, GGUF). One verb per family — ``quantize(model, config)``, ``prune(model, config)`` — each
dispatching on the config's type; every config can be built from a dict with ``config_from_dict``."""

from lmforge.compress.export import export_compressed_tensors, export_gguf
from lmforge.compress.pruning import (
    Magnitude,
    PruneConfig,
    PruneResult,
    SparseGPT,
    Structured,
    StructuredResult,
    Wanda,
    prune,
    prune_then_quantize,
    structured_prune,
)
from lmforge.compress.quantization import AWQ, GPTQ, RTN, QuantConfig, QuantReport, is_quantized, quantize
from lmforge.compress.recipes import config_from_dict
from lmforge.compress.sequential import decoder_layers, layerwise, linear_groups, linear_input_stats
from lmforge.compress.storage import QuantEmbedding, QuantLinear, load_quantized_model, load_sparse, save_quantized, save_sparse

__all__ = [
    "AWQ",
    "GPTQ",
    "Magnitude",
    "PruneConfig",
    "PruneResult",
    "QuantConfig",
    "QuantEmbedding",
    "QuantLinear",
    "QuantReport",
    "RTN",
    "SparseGPT",
    "Structured",
    "StructuredResult",
    "Wanda",
    "config_from_dict",
    "decoder_layers",
    "export_compressed_tensors",
    "export_gguf",
    "is_quantized",
    "layerwise",
    "linear_groups",
    "linear_input_stats",
    "load_quantized_model",
    "load_sparse",
    "prune",
    "prune_then_quantize",
    "quantize",
    "save_quantized",
    "save_sparse",
    "structured_prune",
]
