"""Typed results: what each family of commands produced, as dataclasses the run store serializes.

A result names the models it is about (``ModelRef``: name, path, content hash,
architecture, parameters, dtype), the data it read (``DataRef``), its settings
and its numbers by field, so the report and the MLflow export read fields
instead of guessing among metric names. Metric names follow one spelling,
``<task>.<metric>`` (``wikitext2.ppl``, ``arc_easy.acc``,
``speed.decode_tokens_per_s``) plus ``model_bytes`` and ``disk_bytes``, whichever
command measured them, so one model's numbers from an eval run and from a
compress run land in the same row.

``SCHEMA_VERSION`` is stored beside every serialized result; bump it when a
field changes meaning and teach ``result_from_dict`` to read the old one.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from lmforge.runs.hashing import content_hash

SCHEMA_VERSION = 1


# Names commands used for the same quantity, and the one spelling results use.
CANONICAL_METRICS = {
    "wikitext2_ppl": "wikitext2.ppl", "wikitext2_tokens": "wikitext2.tokens", "arc_easy_acc": "arc_easy.acc",
    "decode_tokens_per_s": "speed.decode_tokens_per_s", "model_ram_bytes": "model_bytes",
    "speed.model_bytes": "model_bytes",
}


def canonical_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Numeric metrics under their one spelling (``compress``'s ``wikitext2_ppl`` is ``eval``'s ``wikitext2.ppl``)."""
    return {CANONICAL_METRICS.get(k, k): float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


@dataclass
class ModelRef:
    """Which model a result is about: enough to find it again and to describe it (Annex XI 1.1(d))."""

    name: str  # as the user gave it: zoo name, folder, .gguf file or hub id
    path: str | None = None  # the folder or file it was read from / written to
    hash: str | None = None  # content hash of ``path``
    architecture: str | None = None
    model_type: str | None = None
    parameters: int | None = None  # distinct parameters, tied embeddings once
    dtype: str | None = None  # the dtype holding most of the model's bytes
    layers: int | None = None
    hidden_size: int | None = None
    context_length: int | None = None
    vocab_size: int | None = None
    model_bytes: int | None = None  # parameters and buffers in memory
    disk_bytes: int | None = None

    @classmethod
    def describe(cls, model, name: str, folder: str | os.PathLike | None = None) -> ModelRef:
        """A loaded model (a transformers PreTrainedModel, compressed or not) and where it came from."""
        from lmforge.models.info import model_info  # a base package; imported late so runs loads without torch

        info = model_info(model, folder=folder)
        info["parameters"] += _packed_parameters(model)
        by_dtype = info.pop("bytes_by_dtype")
        return cls(name=str(name), path=str(Path(folder).resolve()) if folder else None,
                   hash=content_hash(folder) if folder and Path(folder).exists() else None,
                   dtype=max(by_dtype, key=by_dtype.get) if by_dtype else None,
                   **{f.name: info.get(f.name) for f in dataclasses.fields(cls) if f.name in info})

    @property
    def key(self) -> str:
        """Identity across runs: the content hash when known, else the path, else the name."""
        return self.hash or self.path or self.name

    @property
    def label(self) -> str:
        """A readable name: a zoo or hub name as given, a folder or file by its last part."""
        given_a_path = self.path is not None and Path(self.name).expanduser().resolve() == Path(self.path)
        return Path(self.name).name if given_a_path else self.name


def _packed_parameters(model) -> int:
    """Weights a packed layer (a quantized linear) holds as buffers, counted as the parameters they stand for,
    so a model has the same number of parameters before and after quantization."""
    count = 0
    for module in model.modules():
        if hasattr(module, "in_features") and not any(True for _ in module.parameters(recurse=False)):
            count += module.in_features * module.out_features
            count += module.out_features if getattr(module, "bias", None) is not None else 0
    return count


@dataclass
class DataRef:
    """A file, folder or named data set a command read or wrote."""

    name: str
    path: str | None = None
    hash: str | None = None

    @classmethod
    def describe(cls, value: str | os.PathLike) -> DataRef:
        path = Path(value)
        if path.exists():
            return cls(name=str(value), path=str(path.resolve()), hash=content_hash(path))
        return cls(name=str(value))


@dataclass
class Measured:
    """One model's numbers from one result: a column of the report's Evaluation table."""

    model: ModelRef
    metrics: dict[str, float]
    role: str  # 'evaluated', 'base', 'output', 'audited', 'compared', 'trained'


class Result:
    """What every typed result offers; the family dataclasses below fill it from their fields."""

    kind: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    def models(self) -> list[tuple[str, ModelRef]]:
        """(role, model) for every model the result is about."""
        return [(m.role, m.model) for m in self.measured()]

    def measured(self) -> list[Measured]:
        return []

    def metrics(self) -> dict[str, float]:
        """Flat numeric metrics for the run list and run diffs (the first model unprefixed, others by role)."""
        flat: dict[str, float] = {}
        for i, entry in enumerate(self.measured()):
            prefix = "" if i == 0 else f"{entry.role}."
            flat.update({prefix + k: v for k, v in entry.metrics.items()})
        return flat

    def inputs(self) -> dict[str, dict[str, Any]]:
        """What the command read, each with its content hash."""
        return {}

    def outputs(self) -> dict[str, str]:
        """What the command wrote: name -> path."""
        return {}

    def history(self) -> list[dict[str, float]]:
        """Per-step metrics (``{"step": n, "train_loss": ...}``); training results only."""
        return []


def _model_input(model: ModelRef) -> dict[str, Any]:
    return {"name": model.name, "path": model.path, "hash": model.hash}


def _data_inputs(data: dict[str, DataRef]) -> dict[str, dict[str, Any]]:
    return {name: asdict(ref) for name, ref in data.items()}


@dataclass
class EvalResult(Result):
    """``lmforge eval``: one model, its metrics per task."""

    model: ModelRef
    metrics_by_task: dict[str, dict[str, float]] = field(default_factory=dict)  # task -> metric -> value
    settings: dict[str, Any] = field(default_factory=dict)
    data: dict[str, DataRef] = field(default_factory=dict)
    kind: ClassVar[str] = "eval"

    def measured(self) -> list[Measured]:
        flat = {f"{task}.{name}" if task else name: value
                for task, values in self.metrics_by_task.items() for name, value in values.items()}
        return [Measured(self.model, canonical_metrics(flat), "evaluated")]

    def inputs(self) -> dict[str, dict[str, Any]]:
        return {"model": _model_input(self.model), **_data_inputs(self.data)}


@dataclass
class CompressionResult(Result):
    """``lmforge compress``: a base model, the model made from it, and both measured the same way."""

    base: ModelRef
    output: ModelRef
    recipe: dict[str, Any] = field(default_factory=dict)  # method, bits, group_size ...
    base_metrics: dict[str, float] = field(default_factory=dict)
    output_metrics: dict[str, float] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)  # seconds, peak RSS of the compression itself
    details: dict[str, Any] = field(default_factory=dict)  # what the method reports (layers kept, sparsity reached)
    calibration: DataRef | None = None
    exports: dict[str, str] = field(default_factory=dict)  # format -> path (gguf, compressed_tensors)
    kind: ClassVar[str] = "compress"

    def measured(self) -> list[Measured]:
        return [Measured(self.base, self.base_metrics, "base"), Measured(self.output, self.output_metrics, "output")]

    def metrics(self) -> dict[str, float]:
        """The made model's numbers unprefixed (what the run list shows), the base's under 'base.', then the cost."""
        return {**self.output_metrics, **{f"base.{k}": v for k, v in self.base_metrics.items()},
                **{k: v for k, v in self.cost.items() if isinstance(v, (int, float))}}

    def inputs(self) -> dict[str, dict[str, Any]]:
        found = {"model": _model_input(self.base)}
        if self.calibration:
            found["calibration"] = asdict(self.calibration)
        return found

    def outputs(self) -> dict[str, str]:
        return {"model": self.output.path or self.output.name, **self.exports}


@dataclass
class PruningResult(CompressionResult):
    """``lmforge prune``: the same shape as a compression; ``details`` holds the sparsity reached and storage."""

    kind: ClassVar[str] = "prune"


@dataclass
class TrainingResult(Result):
    """``lmforge train`` / ``finetune`` / ``distill``: the model trained, its data, and the loss curve."""

    model: ModelRef
    base: ModelRef | None = None  # the starting model of a fine-tune or distillation
    data: dict[str, DataRef] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)  # params, tokens, train_flops, final losses ...
    steps: list[dict[str, float]] = field(default_factory=list)  # {"step": n, "train_loss": .., "eval_loss": ..}
    kind: ClassVar[str] = "train"

    def measured(self) -> list[Measured]:
        return [Measured(self.model, self.final, "trained")]

    def models(self) -> list[tuple[str, ModelRef]]:
        return super().models() + ([("base", self.base)] if self.base else [])

    def inputs(self) -> dict[str, dict[str, Any]]:
        return {**({"model": _model_input(self.base)} if self.base else {}), **_data_inputs(self.data)}

    def outputs(self) -> dict[str, str]:
        return {"model": self.model.path} if self.model.path else {}

    def history(self) -> list[dict[str, float]]:
        return self.steps

    @staticmethod
    def loss_curve(train_losses: list[float], eval_losses: list[tuple[int, float]] = ()) -> list[dict[str, float]]:
        """Steps from a loss per optimizer step (from step 1) and (step, validation loss) pairs."""
        steps = {i: {"step": i, "train_loss": float(loss)} for i, loss in enumerate(train_losses, start=1)}
        for step, loss in eval_losses:
            steps.setdefault(int(step), {"step": int(step)})["eval_loss"] = float(loss)
        return [steps[i] for i in sorted(steps)]


@dataclass
class AuditResult(Result):
    """``lmforge audit``: headline numbers per audited model; the full report lives in ``report`` (audit.json)."""

    model: ModelRef
    suites: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    compare: ModelRef | None = None
    compare_scores: dict[str, float] = field(default_factory=dict)
    report: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    kind: ClassVar[str] = "audit"

    def measured(self) -> list[Measured]:
        found = [Measured(self.model, self.scores, "audited")]
        if self.compare:
            found.append(Measured(self.compare, self.compare_scores, "compared"))
        return found

    def metrics(self) -> dict[str, float]:
        """The audited model's scores, the compared model's under 'compare.' (as `lmforge audit` has named them)."""
        return {**self.scores, **{f"compare.{k}": v for k, v in self.compare_scores.items()}}

    def inputs(self) -> dict[str, dict[str, Any]]:
        return {"model": _model_input(self.model), **({"compare": _model_input(self.compare)} if self.compare else {})}

    def outputs(self) -> dict[str, str]:
        return {"report": self.report} if self.report else {}


@dataclass
class CurationResult(Result):
    """``lmforge data run``: documents in and out, what each step dropped, the curated folder and its card."""

    pipeline: DataRef
    output: DataRef
    documents_in: int = 0
    documents_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # step -> documents it removed
    card: str | None = None  # the data card (html)
    kind: ClassVar[str] = "curate"

    def metrics(self) -> dict[str, float]:
        return {"documents_in": self.documents_in, "documents_out": self.documents_out,
                **{f"dropped.{step}": n for step, n in self.dropped.items()}}

    def inputs(self) -> dict[str, dict[str, Any]]:
        return {"pipeline": asdict(self.pipeline)}

    def outputs(self) -> dict[str, str]:
        return {"curated": self.output.path or self.output.name, **({"data_card": self.card} if self.card else {})}


RESULT_TYPES: dict[str, type[Result]] = {cls.kind: cls for cls in (
    EvalResult, CompressionResult, PruningResult, TrainingResult, AuditResult, CurationResult)}


def result_from_dict(data: dict[str, Any], schema_version: int = SCHEMA_VERSION) -> Result:
    """The dataclass back from ``Result.to_dict()``; fields a newer lmforge added are ignored."""
    if schema_version > SCHEMA_VERSION:
        from lmforge.errors import LmforgeError

        raise LmforgeError(f"a run result has schema version {schema_version}, newer than this lmforge reads "
                           f"({SCHEMA_VERSION}); upgrade lmforge")
    cls = RESULT_TYPES[data["kind"]]
    return _build(cls, data)


def _build(cls: type, data: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{name: _decode(hints[name], value) for name, value in data.items() if name in known})


def _decode(hint: Any, value: Any) -> Any:
    """Rebuild nested dataclasses (ModelRef, DataRef, dict/list of them) from plain JSON values."""
    if value is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _decode(inner[0], value) if len(inner) == 1 else value
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return _build(hint, value)
    if origin is dict and len(args) == 2 and isinstance(value, dict):
        return {k: _decode(args[1], v) for k, v in value.items()}
    if origin is list and args and isinstance(value, list):
        return [_decode(args[0], v) for v in value]
    return value
