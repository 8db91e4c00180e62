"""Typed results from runs recorded before results were typed (schema 1), and from callers not yet switched over.

Old records hold flat metric names (``baseline.wikitext2_ppl``, ``before.ppl``,
``compare.crows_pct_stereotype``) and the model as a string or ``{path, hash}``.
This module is the one place that reads those spellings; the store calls it
once per row when it migrates an old file, and for a run whose command logged
no typed result, so every reader downstream reads fields.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Callable

from lmforge.runs.results import (
    AuditResult, CompressionResult, CurationResult, DataRef, EvalResult, ModelRef, PruningResult, Result,
    TrainingResult, canonical_metrics,
)

_BEFORE = ("baseline", "before", "base", "original")
_AFTER = ("quantized", "after", "compressed", "pruned", "result")
_COST = ("compress_seconds", "peak_rss_bytes", "quantized_layers_bytes", "quantized_layers_fp32_bytes")
_FACTS = {"architecture": "architecture", "model_type": "model_type", "parameters": "parameters",
          "params": "parameters", "total_params": "parameters", "layers": "layers", "hidden_size": "hidden_size",
          "context_length": "context_length", "vocab_size": "vocab_size"}
_SETTINGS_NOT_RECIPE = {"model", "output", "out", "output_dir", "calib", "calib_samples", "samples", "seqlen", "seed",
                        "eval_windows", "arc_limit"}


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in (data or {}).items():
        name = f"{prefix}.{key}" if prefix else str(key)
        flat.update(_flatten(value, name) if isinstance(value, dict) else {name: value})
    return flat


def _numeric(flat: dict[str, Any]) -> dict[str, float]:
    return canonical_metrics(flat)


def model_ref(name: Any, recorded: Any = None, facts: dict[str, Any] | None = None) -> ModelRef | None:
    """A ModelRef from a recorded model: a name, a path, or ``{path, hash}``; facts from metrics or config.json."""
    path = hash_ = None
    if isinstance(recorded, dict):
        path, hash_ = recorded.get("path"), recorded.get("hash")
    elif isinstance(recorded, str):
        path = recorded if Path(recorded).exists() else None
    if not isinstance(name, str) or not name:
        name = path or (recorded if isinstance(recorded, str) else None)
    if not name:
        return None
    if path is None and Path(name).exists():
        path = name
    values = {field: facts[key] for key, field in _FACTS.items() if facts and key in facts}
    config = Path(path) / "config.json" if path else None
    if config is not None and config.is_file():  # the folder still says what it is
        with contextlib.suppress(ValueError, OSError):
            data = json.loads(config.read_text(encoding="utf-8"))
            for key, field in (("model_type", "model_type"), ("num_hidden_layers", "layers"),
                               ("hidden_size", "hidden_size"), ("max_position_embeddings", "context_length"),
                               ("vocab_size", "vocab_size")):
                if key in data:
                    values.setdefault(field, data[key])
            if data.get("architectures"):
                values.setdefault("architecture", data["architectures"][0])
    return ModelRef(name=name, path=str(Path(path).resolve()) if path else None, hash=hash_, **values)


def _stages(flat: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(before, after, other) metrics of a compression record."""
    before, after, other = {}, {}, {}
    for key, value in flat.items():
        head, _, rest = key.partition(".")
        if rest and head in _BEFORE:
            before[rest] = value
        elif rest and head in _AFTER:
            after[rest] = value
        else:
            other[key] = value
    return before, after, other


def _compression(record, cls: type[CompressionResult]) -> CompressionResult | None:
    flat = _flatten(record.metrics)
    before, after, other = _stages(flat)
    base = model_ref(record.config.get("model"), record.inputs.get("model"), before)
    output_path = record.artifacts.get("model") or record.config.get("output")
    output = model_ref(output_path, output_path, after)
    if base is None or output is None:
        return None
    cost = {k: float(after.pop(k)) for k in _COST if isinstance(after.get(k), (int, float))}
    calib = record.config.get("calib")
    return cls(base=base, output=output,
               recipe={k: v for k, v in record.config.items() if k not in _SETTINGS_NOT_RECIPE},
               base_metrics=_numeric(before), output_metrics=_numeric(after), cost=cost,
               details={k: v for k, v in other.items() if isinstance(v, (int, float, str))},
               calibration=DataRef(name=str(calib)) if calib else None,
               exports={k: v for k, v in record.artifacts.items() if k in {"gguf", "compressed_tensors"}})


def _eval(record) -> EvalResult | None:
    flat = _flatten(record.metrics)
    model = model_ref(record.config.get("model"), record.inputs.get("model"), flat)
    if model is None:
        return None
    by_task: dict[str, dict[str, float]] = {}
    for key, value in _numeric({k: v for k, v in flat.items() if k not in _FACTS}).items():
        task, _, metric = key.partition(".") if "." in key else ("", "", key)
        by_task.setdefault(task, {})[metric] = value
    settings = {k: v for k, v in record.config.items() if k != "model"}
    return EvalResult(model=model, metrics_by_task=by_task, settings=settings)


def _training(record) -> TrainingResult | None:
    flat = _flatten(record.metrics)
    output = record.artifacts.get("model") or record.artifacts.get("adapters")
    model = model_ref(output, output, flat) or ModelRef(name=f"{record.command} {record.id}")
    base_name = record.config.get("model") or record.inputs.get("student")
    base = model_ref(base_name if isinstance(base_name, str) else None, record.inputs.get("model") or base_name)
    data = {k: DataRef(name=str(v.get("path") if isinstance(v, dict) else v), path=v.get("path") if isinstance(v, dict)
                       else None, hash=v.get("hash") if isinstance(v, dict) else None)
            for k, v in record.inputs.items() if k not in {"model", "student"}}
    curve = record.metrics.get("losses") or []
    steps = TrainingResult.loss_curve(curve if isinstance(curve, list) else [], record.metrics.get("eval_losses") or [])
    settings = {k: v for k, v in record.config.items() if k != "model"}
    return TrainingResult(model=model, base=base, data=data, settings=settings, final=_numeric(flat), steps=steps)


def _audit(record) -> AuditResult | None:
    flat = _flatten(record.metrics)
    name, other = record.config.get("model"), record.config.get("compare")
    model = model_ref(name, record.inputs.get(name) if isinstance(name, str) else None)
    if model is None:
        return None
    compare = model_ref(other, record.inputs.get(other)) if isinstance(other, str) else None
    numbers = _numeric(flat)
    return AuditResult(model=model, suites=list(record.config.get("suites") or []),
                       scores={k: v for k, v in numbers.items() if not k.startswith("compare.")},
                       compare=compare,
                       compare_scores={k.removeprefix("compare."): v for k, v in numbers.items()
                                       if k.startswith("compare.")},
                       report=record.artifacts.get("report"),
                       settings={k: v for k, v in record.config.items() if k not in {"model", "compare"}})


def _curation(record) -> CurationResult | None:
    flat = _flatten(record.metrics)
    pipeline = record.inputs.get("pipeline")
    curated = record.artifacts.get("curated") or record.config.get("output")
    return CurationResult(
        pipeline=DataRef(name=str(record.config.get("pipeline") or (pipeline or {}).get("path")),
                         path=(pipeline or {}).get("path") if isinstance(pipeline, dict) else None,
                         hash=(pipeline or {}).get("hash") if isinstance(pipeline, dict) else None),
        output=DataRef(name=str(curated), path=str(curated)) if curated else DataRef(name="unknown"),
        documents_in=int(flat.get("documents_in") or 0), documents_out=int(flat.get("documents_out") or 0),
        dropped={k.removeprefix("steps.").removesuffix(".dropped"): int(v) for k, v in flat.items()
                 if k.endswith(".dropped") and isinstance(v, (int, float))},
        card=record.artifacts.get("data_card"))


_UPGRADES: dict[str, Callable[[Any], Result | None]] = {
    "eval": _eval, "compress": lambda r: _compression(r, CompressionResult),
    "prune": lambda r: _compression(r, PruningResult), "train": _training, "finetune": _training,
    "distill": _training, "audit": _audit, "data run": _curation,
}


def upgrade(record) -> Result | None:
    """The typed result of an old-style record, or None for commands without one (serve, report, models pull ...)."""
    convert = _UPGRADES.get(record.command)
    if convert is None or record.status != "ok":
        return None
    return convert(record)
