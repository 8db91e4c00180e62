"""Every compression config built from a plain dict (``{"method": "gptq", "bits": 4, ...}``) through one function,
so the CLI, ``optimize``'s recipes and YAML recipes share it."""

from __future__ import annotations

from typing import Any

from lmforge.compress.pruning.config import METHODS as PRUNE_METHODS
from lmforge.compress.pruning.config import PruneConfig, Structured
from lmforge.compress.quantization.config import METHODS as QUANT_METHODS
from lmforge.compress.quantization.config import QuantConfig
from lmforge.errors import LmforgeError

CONFIG_TYPES: dict[str, type] = {**QUANT_METHODS, **PRUNE_METHODS, "structured": Structured}


def config_from_dict(data: dict[str, Any]) -> QuantConfig | PruneConfig | Structured:
    """The config named by ``data["method"]``, with the other keys as its fields (each validated by the config)."""
    data = dict(data)
    method = data.pop("method", None)
    if method not in CONFIG_TYPES:
        raise LmforgeError(f"unknown compression method '{method}': use one of {', '.join(CONFIG_TYPES)}")
    config_type = CONFIG_TYPES[method]
    fields = set(config_type.__dataclass_fields__)
    unknown = sorted(set(data) - fields)
    if unknown:
        raise LmforgeError(f"{method} has no setting {', '.join(map(repr, unknown))}; its settings are {', '.join(sorted(fields))}")
    return config_type(**data)
