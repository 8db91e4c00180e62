"""Exports to the formats other engines load: compressed-tensors (transformers, vLLM) and GGUF (llama.cpp, Ollama)."""

from lmforge.compress.export.compressed_tensors import export_compressed_tensors
from lmforge.compress.export.gguf import export_gguf

__all__ = ["export_compressed_tensors", "export_gguf"]
