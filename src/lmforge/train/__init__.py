"""Training: pretrain a llama-architecture model from a config, fine-tune with LoRA, distill."""

from lmforge.train.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from lmforge.train.config import PRESETS, ModelConfig, TrainConfig, load_config, model_config, train_config
from lmforge.train.data import PackedData, load_tokenizer, tokenize_documents, train_tokenizer, training_corpus
from lmforge.train.finetune import FinetuneConfig, FinetuneResult, arc_easy_instructions, finetune
from lmforge.train.pretrain import TrainResult, evaluate_loss, prepare_data, pretrain
from lmforge.train.distill import DistillConfig, DistillResult, distill

__all__ = [
    "DistillConfig",
    "DistillResult",
    "FinetuneConfig",
    "FinetuneResult",
    "ModelConfig",
    "PRESETS",
    "PackedData",
    "TrainConfig",
    "TrainResult",
    "arc_easy_instructions",
    "distill",
    "evaluate_loss",
    "find_checkpoint",
    "finetune",
    "load_checkpoint",
    "load_config",
    "load_tokenizer",
    "model_config",
    "prepare_data",
    "pretrain",
    "save_checkpoint",
    "tokenize_documents",
    "train_config",
    "train_tokenizer",
    "training_corpus",
]
