"""Reading run records: flat metric names, what a metric's good direction is, which model a run was about.

Commands record metrics as nested dicts (``{"wikitext2": {"ppl": 21.9}}``) or
dotted names (``"wikitext2.ppl"``); both become dotted names here, so every
other module in the report matches on one spelling.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from lmforge.runs import RunRecord

# Command families, by the first word of the recorded command.
FAMILIES = {
    "eval": "evaluation", "evaluate": "evaluation",
    "compress": "compression", "prune": "compression", "quantize": "compression", "optimize": "compression",
    "distill": "compression",
    "audit": "audit", "explain": "audit",
    "data": "data",
    "train": "training", "finetune": "training", "scale": "training",
    "models": "model", "serve": "serving", "quickstart": "pipeline", "report": "report",
}

# Name fragments that say which way a metric should move. Order matters: the first match wins.
_LOWER = re.compile(r"(membership|exposure|canary|leak|pii_in|memoriz|likelihood_diff|ppl|perplexity|loss|nll"
                    r"|bits_per|_ms\b|latency|seconds|(^|\.)time|duration|bytes|size_mb|rss|memory|energy|kwh"
                    r"|co2|flops|error)")
_HIGHER = re.compile(r"(acc|accuracy|f1|precision|recall|exact_match|tokens_per_s|tok_s|throughput|per_s\b"
                     r"|pass_rate|auc|score|mfu)")
_TARGET_HALF = re.compile(r"pct_stereotype")  # an unbiased model prefers neither sentence: 50 %


_TASK_METRIC = re.compile(r"^(?P<task>.+?)[._](?P<metric>ppl|perplexity|word_perplexity|byte_perplexity|bits_per_byte"
                          r"|acc_norm|acc|f1|exact_match)$")


def task_metric(name: str) -> tuple[str, str] | None:
    """('wikitext2', 'ppl') from 'wikitext2.ppl' or 'wikitext2_ppl'; None for names that are not a task score."""
    match = _TASK_METRIC.match(name)
    return (match["task"], match["metric"]) if match else None


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in (data or {}).items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def numeric(data: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in flatten(data).items() if is_number(v)}


def direction(metric: str) -> str | None:
    """'lower', 'higher', 'half' (closest to 50 % is best) or None when the name does not say."""
    name = metric.lower()
    if re.search(r"stderr|(^|[._])(ci|low|high|lower|upper|ci95)($|[._])", name):
        return None  # uncertainty, not quality
    if _TARGET_HALF.search(name):
        return "half"
    if _LOWER.search(name):
        return "lower"
    if _HIGHER.search(name):
        return "higher"
    return None


def badness(metric: str, value: float) -> float | None:
    """A number where smaller is better, for comparing two values of the same metric."""
    way = direction(metric)
    if way == "lower":
        return value
    if way == "higher":
        return -value
    if way == "half":
        return abs(value - (50.0 if value > 1.0 else 0.5))
    return None


def family(run: RunRecord) -> str:
    return FAMILIES.get(run.command.split()[0], "other")


def path_or_text(value: Any) -> str | None:
    """A recorded model reference as one spelling: existing paths absolute, names as given."""
    if isinstance(value, dict):
        value = value.get("path") or value.get("name")
    if value in (None, ""):
        return None
    path = Path(str(value)).expanduser()
    return str(path.resolve()) if path.exists() else str(value)


def model_of(run: RunRecord) -> str | None:
    """The model a run read (a zoo name, folder or hub id), as recorded."""
    for source in (run.inputs, run.config):
        for key in ("model", "base_model", "student", "model_path"):
            if found := path_or_text(source.get(key)):
                return found
    if run.command.startswith("models pull"):
        return path_or_text(run.config.get("name"))
    return None


def output_of(run: RunRecord) -> str | None:
    """The model a run wrote, if it wrote one."""
    for key in ("model", "output", "out", "compressed_model"):
        if found := path_or_text(run.artifacts.get(key)):
            return found
    for key in ("output", "out", "output_dir"):
        if found := path_or_text(run.config.get(key)):
            return found
    return None


def short_name(model: str | None) -> str:
    """A readable label: the folder name for paths, the text otherwise."""
    if not model:
        return "unknown model"
    path = Path(model)
    return path.name if len(path.parts) > 1 else model


def recipe_brief(config: dict[str, Any]) -> str:
    """'gptq int4 g64', 'wanda 50% 2:4' ... from a compression run's settings."""
    parts = [str(config[k]) for k in ("method", "recipe") if config.get(k)]
    bits = config.get("bits") or config.get("quantize_bits")  # prune --quantize-bits: pruned, then quantized
    if bits:
        parts.append(f"int{bits}")
        if config.get("group_size"):
            parts.append(f"g{config['group_size']}")
    if is_number(config.get("sparsity")):
        parts.append(f"{config['sparsity']:.0%}")
    if config.get("pattern") and config.get("pattern") != "unstructured":
        parts.append(str(config["pattern"]))
    return " ".join(parts)


def model_names(runs: list[RunRecord]) -> dict[str, str]:
    """Readable names for recorded model paths: a pulled zoo folder by its zoo name, a compressed one by its recipe."""
    names: dict[str, str] = {}
    for run in sorted(runs, key=lambda r: r.started):
        for value in run.inputs.values():  # a zoo model is recorded with its name beside the folder it was read from
            if isinstance(value, dict) and value.get("name") and value.get("path"):
                names[path_or_text(value["path"])] = str(value["name"])
        output = output_of(run)
        if not output:
            continue
        if run.command.startswith("models pull") and run.config.get("name"):
            names[output] = str(run.config["name"])
        elif family(run) == "compression":
            base = model_of(run)
            brief = recipe_brief(run.config) or run.command
            names[output] = f"{names.get(base, short_name(base))} · {brief}" if base else brief
        elif family(run) == "training":
            base = model_of(run)
            names[output] = f"{names.get(base, short_name(base)) if base else 'from scratch'} · {run.command} " \
                            f"{run.id[-6:]}"
    return names


def find_first(flat: dict[str, Any], *suffixes: str) -> tuple[str, float] | None:
    """The first numeric metric whose name ends with one of ``suffixes`` (tried in order)."""
    for suffix in suffixes:
        for key, value in flat.items():
            if (key == suffix or key.endswith("." + suffix) or key.endswith("_" + suffix)) and is_number(value):
                return key, float(value)
    return None
