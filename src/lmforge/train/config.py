"""Training configuration: typed dataclasses that a YAML file maps onto field by field.

```yaml
model: 3m                 # a size preset, or a mapping of ModelConfig fields
corpus: wikitext2
max_steps: 400
batch_size: 32
lr: 2.0e-3
```
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from lmforge.errors import LmforgeError


@dataclass
class ModelConfig:
    """The shape of a llama-architecture model (RMSNorm, rotary positions, SwiGLU, grouped-query attention)."""

    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 4
    intermediate_size: int = 352
    vocab_size: int = 4096
    context_length: int = 256
    tie_embeddings: bool = True
    rope_theta: float = 10000.0

    def validate(self) -> None:
        for name in ("hidden_size", "layers", "heads", "kv_heads", "intermediate_size", "vocab_size", "context_length"):
            if getattr(self, name) < 1:
                raise LmforgeError(f"model.{name} must be a positive integer (got {getattr(self, name)})")
        if self.hidden_size % self.heads:
            divisors = [h for h in range(1, self.hidden_size + 1) if self.hidden_size % h == 0 and h <= 64]
            raise LmforgeError(
                f"model.heads={self.heads} does not divide model.hidden_size={self.hidden_size}; "
                f"choose heads among {divisors[-6:]} or change hidden_size"
            )
        if self.heads % self.kv_heads:
            raise LmforgeError(f"model.kv_heads={self.kv_heads} must divide model.heads={self.heads} (grouped-query attention)")
        if (self.hidden_size // self.heads) % 2:
            raise LmforgeError(f"head size hidden_size/heads = {self.hidden_size // self.heads} must be even for rotary positions")

    def to_hf(self, tokenizer=None):
        """The ``transformers.LlamaConfig`` of this shape."""
        from transformers import LlamaConfig

        special = {}
        if tokenizer is not None:
            special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                       "pad_token_id": tokenizer.pad_token_id}
        return LlamaConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_hidden_layers=self.layers, num_attention_heads=self.heads, num_key_value_heads=self.kv_heads,
            max_position_embeddings=self.context_length, tie_word_embeddings=self.tie_embeddings,
            rope_theta=self.rope_theta, **special,
        )


# Size presets, named by their parameter count with the default 4096-token vocabulary and tied embeddings.
PRESETS: dict[str, ModelConfig] = {
    "1m": ModelConfig(hidden_size=96, layers=4, heads=4, kv_heads=4, intermediate_size=256),
    "3m": ModelConfig(hidden_size=160, layers=6, heads=5, kv_heads=5, intermediate_size=432),
    "10m": ModelConfig(hidden_size=288, layers=8, heads=6, kv_heads=6, intermediate_size=768),
    "30m": ModelConfig(hidden_size=448, layers=12, heads=7, kv_heads=7, intermediate_size=1216),
}


@dataclass
class TrainConfig:
    """Everything a pretraining run needs; YAML keys are these field names."""

    model: ModelConfig = field(default_factory=lambda: dataclasses.replace(PRESETS["1m"]))
    corpus: str = "wikitext2"
    text_field: str = "text"
    tokenizer: str | None = None  # None: train a byte-level BPE of model.vocab_size on the corpus
    batch_size: int = 16  # sequences per optimizer step, over all processes
    micro_batch_size: int | None = None  # sequences per forward pass; smaller means gradient accumulation
    max_steps: int = 200
    max_tokens: int | None = None  # when set, max_steps = ceil(max_tokens / tokens per step)
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    val_fraction: float = 0.05
    eval_interval: int = 50
    eval_batches: int = 8
    log_interval: int = 10
    checkpoint_interval: int = 0  # 0: a checkpoint only at the end
    keep_checkpoints: int = 2
    precision: str = "auto"  # auto (bf16 autocast where supported on GPU, else fp32) | fp32 | bf16
    gradient_checkpointing: bool = False
    compile: bool = False
    seed: int = 0

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.model.context_length

    @property
    def steps(self) -> int:
        if self.max_tokens:
            return max(1, -(-self.max_tokens // self.tokens_per_step))
        return self.max_steps

    def validate(self, world_size: int = 1) -> None:
        self.model.validate()
        if self.batch_size < 1 or self.steps < 1:
            raise LmforgeError(f"batch_size and max_steps must be at least 1 (got {self.batch_size}, {self.steps})")
        if self.batch_size % world_size:
            raise LmforgeError(f"batch_size={self.batch_size} must be a multiple of the {world_size} processes")
        micro = self.micro_batch_size or self.batch_size // world_size
        if (self.batch_size // world_size) % micro:
            raise LmforgeError(
                f"micro_batch_size={micro} must divide the per-process batch {self.batch_size // world_size} "
                f"(batch_size={self.batch_size} over {world_size} processes)"
            )
        if self.precision not in {"auto", "fp32", "bf16"}:
            raise LmforgeError(f"precision '{self.precision}' is not one of auto, fp32, bf16")
        if not 0 < self.val_fraction < 0.5:
            raise LmforgeError(f"val_fraction={self.val_fraction} must be between 0 and 0.5")
        if not self.lr > 0:
            raise LmforgeError(f"lr must be above 0 (got {self.lr})")
        if self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise LmforgeError("warmup_steps must be >= 0 and min_lr_ratio within [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_config(value: str | dict | ModelConfig) -> ModelConfig:
    """A preset name, a mapping of ModelConfig fields (optionally with `preset:` as the base), or a ModelConfig."""
    if isinstance(value, ModelConfig):
        return value
    if isinstance(value, str):
        if value not in PRESETS:
            raise LmforgeError(f"unknown model preset '{value}'; choose one of {', '.join(PRESETS)} or give the shape")
        return dataclasses.replace(PRESETS[value])
    if isinstance(value, dict):
        value = dict(value)
        base = model_config(value.pop("preset")) if "preset" in value else ModelConfig()
        return dataclasses.replace(base, **_checked(value, ModelConfig, "model."))
    raise LmforgeError(f"model must be a preset name or a mapping of fields (got {type(value).__name__})")


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _checked(values: dict, cls, prefix: str = "") -> dict:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise LmforgeError(f"unknown config field '{prefix}{unknown[0]}'; known fields: {', '.join(known)}")
    out = {}
    for name, value in values.items():
        annotation = str(known[name].type)
        kind = next((k for k in (bool, int, float, str) if annotation.split(" ")[0] == k.__name__), None)
        if value is None and "None" in annotation or kind is None:
            out[name] = value
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind is float and number:
            value = float(value)
        elif kind is int and number and float(value).is_integer():
            value = int(value)
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise LmforgeError(f"config field '{prefix}{name}' must be {_KIND_NAMES[kind]} (got {value!r})")
        out[name] = value
    return out


def train_config(values: dict | None = None, **overrides) -> TrainConfig:
    """A TrainConfig from a mapping (e.g. parsed YAML) and keyword overrides; unknown fields are errors."""
    values = {**(values or {}), **{k: v for k, v in overrides.items() if v is not None}}
    model = model_config(values.pop("model", "1m"))
    return TrainConfig(model=model, **_checked(values, TrainConfig))


def load_config(path: str | os.PathLike, **overrides) -> TrainConfig:
    """Read a YAML training config; keys map 1:1 to TrainConfig fields."""
    from lmforge.io import read_yaml_mapping

    return train_config(read_yaml_mapping(path, "config file", "keys are TrainConfig fields"), **overrides)


def from_dict(values: dict) -> TrainConfig:
    """Inverse of ``TrainConfig.to_dict`` (checkpoints store the config this way)."""
    values = dict(values)
    return TrainConfig(model=ModelConfig(**values.pop("model")), **values)
