"""How compressed weights are held and saved: packed low-bit linears and their kernels, bitmask sparse storage.

Importing this package lets ``lmforge.models.load_model`` open the folders it writes.
"""

import torch

from lmforge.compress.storage.qlinear import QuantEmbedding, QuantLinear
from lmforge.compress.storage.serialize import load_quantized_model, save_quantized
from lmforge.compress.storage.sparse import load_sparse, save_sparse
from lmforge.models.loading import register_artifact_loader

register_artifact_loader(lambda metadata: "quantization" in metadata, load_quantized_model)
register_artifact_loader(
    lambda metadata: metadata.get("storage") == "bitmask",
    lambda folder, dtype: load_sparse(folder)[0].to(dtype or torch.float32),
)

__all__ = ["QuantEmbedding", "QuantLinear", "load_quantized_model", "load_sparse", "save_quantized", "save_sparse"]
