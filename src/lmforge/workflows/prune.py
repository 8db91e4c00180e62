"""Pruning of every kind (unstructured, N:M, structured, prune-then-quantize), distillation of a pruned student, and
the one place that decides how a compressed model is saved."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from lmforge.compress import (RTN, PruneConfig, Structured, is_quantized, prune, prune_then_quantize,
                              save_quantized, save_sparse, structured_prune)
from lmforge.compress.storage.sparse import SPARSE_FILE, load_sparse
from lmforge.data import calibration_batches, load_corpus
from lmforge.models import load_model, resolve_source, save_model, zoo_path
from lmforge.train.distill import DistillConfig, DistillResult, distill


def calibration(tokenizer, corpus: str, samples: int, seqlen: int, seed: int = 0) -> torch.Tensor:
    """``[samples, seqlen]`` token ids drawn from ``corpus`` (a named data set or a path)."""
    return calibration_batches(tokenizer, load_corpus(corpus), samples, seqlen, seed=seed)


def source_folder(model: str) -> Path | None:
    """The folder a model source reads from (zoo, folder or GGUF), or None for a hub id."""
    kind, where = resolve_source(model)
    return zoo_path(model) if kind == "zoo" else (Path(where) if kind in {"folder", "gguf"} else None)


def prune_model(model, config: PruneConfig | Structured, calibration: torch.Tensor | None, *,
                quantize_bits: int | None = None, group_size: int = 64,
                progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Prune ``model`` in place (then quantize the survivors with RTN when ``quantize_bits``); returns the summary."""
    if isinstance(config, Structured):
        return structured_prune(model, config, calibration, progress=progress).to_dict()
    if quantize_bits:
        return prune_then_quantize(model, config, RTN(bits=quantize_bits, group_size=group_size), calibration)
    return prune(model, config, calibration, progress=progress).to_dict()


def save_compressed(model, tokenizer, out: str | Path, metadata: dict[str, Any], *, sparse: bool) -> dict[str, int] | None:
    """Save as what the model now is: packed low-bit weights, bitmask-sparse weights (``sparse``), or a plain dense
    model (e.g. a structurally pruned one); returns the sparse storage's byte counts when it stored sparse weights."""
    if is_quantized(model):
        save_quantized(model, tokenizer, out, metadata=metadata)
        return None
    if sparse:
        return save_sparse(model, tokenizer, out, metadata)
    save_model(model, tokenizer, out, metadata)
    return None


def load_student(model: str):
    """A distillation student: a bitmask-sparse folder keeps its masks (zeros stay zero), anything else loads dense."""
    folder = source_folder(model)
    return load_sparse(folder) if folder and (folder / SPARSE_FILE).is_file() else load_model(model)


def distill_model(student: str, teacher: str, corpus: str, config: DistillConfig, out: str | Path, *,
                  progress: Callable[[int], None] | None = None,
                  log: Callable[[dict[str, Any]], None] | None = None) -> DistillResult:
    """Distill ``teacher`` into ``student`` on ``corpus`` and save the student sparse (its pruned zeros kept)."""
    student_model, tokenizer = load_student(student)
    teacher_model, _ = load_model(teacher)
    result = distill(student_model, teacher_model, load_corpus(corpus), config, tokenizer=tokenizer, progress=progress,
                     log=log)
    save_sparse(student_model, tokenizer, out, {"distilled_from": teacher})
    return result
