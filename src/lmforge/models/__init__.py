"""Models: load from a folder, a GGUF file, the hub or the zoo; save as safetensors; describe."""

from lmforge.models.info import context_length, model_device, model_info, parameter_count, precision, tensor_bytes
from lmforge.models.loading import available_zoo_name, fit_seqlen, load_model, model_input, plain_copy, pull, read_metadata, resolve_source, save_model, zoo_path
from lmforge.models.tiny import tiny_llama, tiny_model_and_tokenizer, tiny_tokenizer
from lmforge.models.zoo import ZOO

__all__ = [
    "ZOO",
    "available_zoo_name",
    "context_length",
    "fit_seqlen",
    "load_model",
    "model_device",
    "model_info",
    "model_input",
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
