"""Models: load from a folder, a GGUF file, the hub or the zoo; save as safetensors; describe."""

from lmforge.models.info import context_length, model_device, model_info, parameter_count, precision, tensor_bytes
from lmforge.models.loading import load_model, plain_copy, pull, read_metadata, resolve_source, save_model, zoo_path
from lmforge.models.tiny import tiny_llama, tiny_model_and_tokenizer, tiny_tokenizer
from lmforge.models.zoo import ZOO

__all__ = [
    "ZOO",
    "context_length",
    "load_model",
    "model_device",
    "model_info",
    "parameter_count",
    "plain_copy",
    "precision",
    "pull",
    "read_metadata",
    "resolve_source",
    "save_model",
    "tensor_bytes",
    "tiny_llama",
    "tiny_model_and_tokenizer",
    "tiny_tokenizer",
    "zoo_path",
]
