"""Evaluate a model on tasks: perplexity corpora, multiple-choice tasks and speed, the job behind ``lmforge eval``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from lmforge.data import load_corpus
from lmforge.data.named import NAMES
from lmforge.errors import LmforgeError
from lmforge.evaluate import builtin_tasks, load_task, multiple_choice, perplexity, speed
from lmforge.evaluate.tasks import (EvalSettings, GroupConfig, RequestCache, TaskResult, aggregate_group, evaluate_task,
                                    expand, resolve)
from lmforge.paths import home_dir
from lmforge.workflows.progress import Progress, no_progress


def _is_corpus(task: str) -> bool:
    return task in NAMES or Path(task).exists()


def check_task(task: str) -> None:
    """Fail before any model is loaded when ``task`` names nothing lmforge can evaluate."""
    if task == "speed" or task in builtin_tasks() or task.endswith(".yaml") or _is_corpus(task):
        return
    known = sorted({*builtin_tasks(), "wikitext2", "web_articles", "speed"})
    raise LmforgeError(f"unknown task '{task}'; use one of: {', '.join(known)}, a corpus path, or a task .yaml")


def run_task(model, tokenizer, task: str, *, protocol: str = "windows", seqlen: int = 2048, stride: int | None = None,
             limit: int | None = None, batch_size: int = 1, data_dir: str | None = None,
             text_field: str = "text", progress: Progress = no_progress) -> dict[str, Any]:
    """Evaluate one task and return its metrics."""
    check_task(task)
    if task == "speed":
        with progress("timing prefill and decode", None):
            return speed(model, tokenizer)
    if task in builtin_tasks() or task.endswith(".yaml"):
        spec = load_task(task)
        with progress(spec.name, None) as advance:
            result = multiple_choice(model, tokenizer, spec, limit=limit, batch_size=batch_size, data=data_dir,
                                     progress=advance, on_total=advance.set_total)
        return {k: v for k, v in result.items() if k != "details"}
    corpus = load_corpus(task, data=data_dir, text_field=text_field)
    with progress(f"{corpus.name} ({protocol})", None) as advance:
        result = perplexity(model, tokenizer, corpus, protocol=protocol, seqlen=seqlen, stride=stride, limit=limit,
                            batch_size=batch_size, progress=advance, on_total=advance.set_total)
    return {k: v for k, v in result.to_dict().items() if k != "window_nll"}


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"batch_1": {"decode_tokens_per_s": 3}}`` → ``{"batch_1.decode_tokens_per_s": 3}`` (scalars only)."""
    flat = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float, str)) or value is None:
            flat[f"{prefix}{key}"] = value
    return flat


def run_task_file(model, tokenizer, name: str, settings: EvalSettings, *, include_paths: Sequence[str] = (),
                  cache: bool = False, progress: Progress = no_progress) -> tuple[dict[str, Any], list[TaskResult]]:
    """Evaluate an lm-eval-format task or group; returns (metrics by task, plus the group's aggregate; the results)."""
    config = resolve(name, include_paths)
    request_cache = RequestCache(home_dir() / "eval-cache") if cache else None
    results = []
    for task in expand(config, include_paths):
        with progress(task.task, None) as advance:
            results.append(evaluate_task(model, tokenizer, task, settings, cache=request_cache, progress=advance,
                                         on_total=advance.set_total))
    summary: dict[str, Any] = {"tasks": {r.task: r.to_dict() for r in results}}
    if isinstance(config, GroupConfig):
        summary["group"] = {"name": config.group, "metrics": aggregate_group(config, results),
                            "documents": sum(r.documents for r in results)}
    return summary, results


def task_file_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Run-record metrics named '<task>.<metric>' ('<task>.<filter>.<metric>' for a filter other than none),
    the names the report reads (lmforge.report.records.task_metric)."""
    def named(task: str, key: str) -> str:
        metric, _, filter_name = key.partition(",")
        return f"{task}.{metric}" if filter_name in ("", "none") else f"{task}.{filter_name}.{metric}"

    flat = {}
    for task, result in summary["tasks"].items():
        flat.update({named(task, k): v for k, v in result["metrics"].items()})
        flat.update({named(task, k) + "_stderr": v for k, v in result["stderr"].items() if v is not None})
    if group := summary.get("group"):
        flat.update({named(group["name"], k): v for k, v in group["metrics"].items()})
    return flat
