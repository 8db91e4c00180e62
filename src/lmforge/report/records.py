"""Reading run records: flat metric names, what a metric's good direction is, which models the runs were about.

Commands record metrics as nested dicts (``{"wikitext2": {"ppl": 21.9}}``) or
dotted names (``"wikitext2.ppl"``); both become dotted names here, so every
other module in the report matches on one spelling.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from lmforge.runs import ModelRef, RunRecord

# Command families, by the first word of the recorded command.
FAMILIES = {
    "eval": "evaluation", "evaluate": "evaluation",
    "compress": "compression", "prune": "compression", "quantize": "compression", "optimize": "compression",
    "distill": "compression",
    "audit": "audit", "explain": "audit",
    "data": "data",
    "train": "training", "finetune": "training", "scale": "training",
    "models": "model", "serve": "serving", "report": "report",
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


_KINDS = {"eval": "evaluation", "compress": "compression", "prune": "compression", "train": "training",
          "audit": "audit", "curate": "data"}


def family(run: RunRecord) -> str:
    if run.result is not None:
        return _KINDS[run.result.kind]
    return FAMILIES.get(run.command.split()[0], "other")


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


def same_model(a: ModelRef, b: ModelRef) -> bool:
    """One model seen by two runs: the same content hash, else the same path, else the same name."""
    if a.hash and b.hash:
        return a.hash == b.hash
    if a.path and b.path:
        return a.path == b.path
    return a.name == b.name


@dataclass
class Known:
    """A model as the whole selection of runs knows it: facts merged from every run, and a readable label."""

    ref: ModelRef
    label: str
    role: str  # 'input' or 'derived'
    first_run: str


class Catalog:
    """Every model the runs name, each once; derived models are labelled by their recipe ('base · gptq int4 g64')."""

    def __init__(self, runs: list[RunRecord]):
        self.models: list[Known] = []
        for run in sorted(runs, key=lambda r: r.started):
            if run.result is None or run.status != "ok":
                continue
            for role, ref in run.result.models():
                self.find(ref, run)
            for role, ref in run.result.models():
                if role in {"output", "trained"}:
                    self._name_derived(self.find(ref, run), run)

    def find(self, ref: ModelRef, run: RunRecord | None = None) -> Known:
        for known in self.models:
            if same_model(known.ref, ref):
                for name, value in vars(ref).items():  # facts another run knew fill the gaps
                    if getattr(known.ref, name) is None and value is not None:
                        setattr(known.ref, name, value)
                return known
        known = Known(ModelRef(**vars(ref)), ref.label, "input", run.id if run else "")
        self.models.append(known)
        return known

    def _name_derived(self, known: Known, run: RunRecord) -> None:
        result = run.result
        base = getattr(result, "base", None)
        base_label = self.find(base).label if base else None
        known.role = "derived"
        if isinstance(getattr(result, "recipe", None), dict):
            brief = recipe_brief(result.recipe) or run.command
            known.label = f"{base_label} · {brief}" if base_label else brief
        else:
            known.label = f"{base_label or 'from scratch'} · {run.command} {run.id[-6:]}"

    def label(self, ref: ModelRef | None) -> str:
        return self.find(ref).label if ref else "unknown model"


def find_first(flat: dict[str, Any], *suffixes: str) -> tuple[str, float] | None:
    """The first numeric metric whose name ends with one of ``suffixes`` (tried in order)."""
    for suffix in suffixes:
        for key, value in flat.items():
            if (key == suffix or key.endswith("." + suffix) or key.endswith("_" + suffix)) and is_number(value):
                return key, float(value)
    return None
